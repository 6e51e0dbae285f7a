"""The benchmark's harness (bench/run.py is the entry point, bench/phases/ the phases): the run's
configuration, its database, vhost and SMTP sink, the real processes it starts (each one's command
line from the Procfile), the load generator, and the loop that runs the phases and records what
each measured. Each phase is a module of bench/phases/ with `run(bench) -> dict`.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import psycopg

from bench import profiling, report
from bench.stack import (
    PYTHON,
    Watcher,
    database_create,
    database_drop,
    free_port,
    http_ok,
    port_open,
    vhost_create,
    vhost_delete,
    wait_until,
)
from eventplatform.procfile import procfile_command
from tests.support.processes import ManagedProcess

PORTAL_SLUG = "bench"
# The hops a webhook's CPU is accounted to (the SMTP sink and the load generator are the harness).
STACK_KINDS = ("web", "relay", "worker", "postgres", "rabbitmq")
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"


@dataclass
class Config:
    quick: bool
    pg_seconds: float
    pg_clients: int
    rabbit_messages: int
    noop_messages: int
    email_messages: int
    ingest_seconds: float
    relay_rows: int
    lag_rate: float
    lag_seconds: float
    worker_notifications: int
    e2e_seconds: float
    e2e_sustained_seconds: float  # the 200/s run
    burst_webhooks: int
    drain_timeout: float
    web_workers: int | None  # None: the project's own (gunicorn.conf.py: WEB_CONCURRENCY, default 2)
    worker_processes: int
    worker_threads: int
    relay_batch_size: int = 500
    scale_seconds: float = 10  # --scale-out: load per step
    scale_clients: int = 16
    idle_seconds: float = 5

    @classmethod
    def build(cls, args: argparse.Namespace) -> Config:
        cores = os.cpu_count() or 1
        common = dict(
            pg_clients=16,
            lag_rate=200.0,
            web_workers=args.web_workers,
            worker_processes=args.worker_processes or cores,
            worker_threads=args.worker_threads,
        )
        if args.quick:
            return cls(
                quick=True,
                pg_seconds=2,
                rabbit_messages=2_000,
                noop_messages=400,
                email_messages=150,
                ingest_seconds=2,
                relay_rows=2_000,
                lag_seconds=3,
                worker_notifications=100,
                e2e_seconds=3,
                e2e_sustained_seconds=3,
                burst_webhooks=200,
                drain_timeout=30,
                scale_seconds=4,
                **common,
            )
        return cls(
            quick=False,
            pg_seconds=10,
            rabbit_messages=20_000,
            noop_messages=10_000,
            email_messages=3_000,
            ingest_seconds=10,
            relay_rows=20_000,
            lag_seconds=20,
            worker_notifications=5_000,
            e2e_seconds=30,
            e2e_sustained_seconds=60,
            burst_webhooks=5_000,
            drain_timeout=120,
            **common,
        )


class PhaseFailed(Exception):
    pass


class Bench:
    def __init__(self, config: Config, args: argparse.Namespace) -> None:
        self.config = config
        self.args = args
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
        self.run_id = f"bench_{stamp}_{uuid.uuid4().hex[:6]}"
        self.db_name = args.db_name or self.run_id
        self.vhost = args.vhost or self.run_id
        self.run_dir = Path(tempfile.mkdtemp(prefix="ep-bench-"))
        self.secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        self.database_url = f"postgres://postgres@127.0.0.1:5432/{self.db_name}"
        self.broker_url = f"amqp://guest:guest@127.0.0.1:5672/{self.vhost}"
        self.dsn = f"host=127.0.0.1 port=5432 user=postgres dbname={self.db_name}"
        self.watcher = Watcher(database=self.db_name).start()
        self.processes: list[ManagedProcess] = []
        self.phases: dict[str, Any] = {}
        self.errors: list[str] = []
        self.sink: ManagedProcess | None = None
        self.sink_port = free_port()
        self.sink_path = self.run_dir / "smtp-received.tsv"
        self._sink_offset = 0
        self.received: list[tuple[float, str, str]] = []
        self.web: ManagedProcess | None = None
        self.web_url = ""
        self.web_port = 0
        self.web_workers = 0
        self.relays: list[ManagedProcess] = []
        self.worker: ManagedProcess | None = None
        self.created_db = self.created_vhost = False
        self._db: psycopg.Connection | None = None
        self.started = time.time()

    # --- infrastructure -------------------------------------------------------------------

    def log(self, message: str) -> None:
        print(f"[{time.time() - self.started:6.1f}s] {message}", file=sys.stderr, flush=True)

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "DJANGO_SETTINGS_MODULE",
                "PROMETHEUS_MULTIPROC_DIR",
                "WEB_CONCURRENCY",
                "PYTHONUNBUFFERED",
                "DRAMATIQ_NPROCS",
                "DRAMATIQ_NTHREADS",
                "dramatiq_prom_port",
                "dramatiq_queue_prefetch",
            )
        }
        env.update(
            DJANGO_SETTINGS_MODULE="eventplatform.settings.development",
            DATABASE_URL=self.database_url,
            BROKER_URL=self.broker_url,
            EMAIL_URL=f"smtp://127.0.0.1:{self.sink_port}",
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
            SECRET_KEY="bench-" + self.run_id,
            RELAY_BATCH_SIZE=str(self.config.relay_batch_size),
            dramatiq_prom_port=str(free_port()),
        )
        env.update(extra)
        return env

    def start(self, name: str, kind: str, args: list[str], **env: str) -> ManagedProcess:
        process = ManagedProcess(name, args, self.env(**env), kind=kind, log_dir=self.run_dir)
        self.processes.append(process)
        self.watcher.watch(process)
        return process

    def stop(self, process: ManagedProcess | None) -> None:
        if process is not None:
            self.watcher.poll()
            process.stop(timeout=30)

    def manage(self, *args: str, timeout: float = 300) -> str:
        result = subprocess.run(
            [PYTHON, "manage.py", *args], cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise PhaseFailed(f"manage.py {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result.stdout

    @property
    def db(self) -> psycopg.Connection:
        if self._db is None or self._db.closed:
            self._db = psycopg.connect(self.dsn, autocommit=True)
        return self._db

    def sql(self, query: str, params: Any = None) -> list[tuple]:
        cursor = self.db.execute(query, params)
        return cursor.fetchall() if cursor.description else []

    def amqp(self) -> pika.BlockingConnection:
        return pika.BlockingConnection(pika.URLParameters(self.broker_url))

    def queue_depth(self, name: str) -> int:
        connection = self.amqp()
        try:
            return connection.channel().queue_declare(name, passive=True).method.message_count
        finally:
            connection.close()

    def queues_drop(self, *names: str, purge_only: bool = False) -> None:
        connection = self.amqp()
        try:
            for name in names:
                for queue in (name, f"{name}.DQ", f"{name}.XQ"):
                    channel = connection.channel()
                    try:
                        channel.queue_purge(queue) if purge_only else channel.queue_delete(queue)
                        channel.close()
                    except pika.exceptions.ChannelClosedByBroker:
                        pass  # never declared
        finally:
            connection.close()

    def sink_records(self) -> list[tuple[float, str, str]]:
        """Every (received, notification id, recipient) the SMTP sink has recorded so far."""
        with self.sink_path.open() as handle:
            handle.seek(self._sink_offset)
            data = handle.read()
        complete = data[: data.rfind("\n") + 1]
        self._sink_offset += len(complete.encode())
        for line in complete.splitlines():
            received, notification_id, recipient = line.split("\t")
            self.received.append((float(received), notification_id, recipient))
        return self.received

    def setup(self) -> None:
        self.log(f"run {self.run_id}: database {self.db_name}, vhost {self.vhost}, logs in {self.run_dir}")
        database_create(self.db_name)
        self.created_db = True
        vhost_create(self.vhost)
        self.created_vhost = True
        self.manage("migrate", "--no-input")
        self.manage("create_portal", PORTAL_SLUG, "--name", "Benchmark portal", "--secret", self.secret)
        self.sink_path.touch()
        self.sink = self.start(
            "smtp-sink",
            "smtp_sink",
            [PYTHON, "-m", "bench.smtp_sink", "--port", str(self.sink_port), "--out", str(self.sink_path)],
        )
        wait_until(lambda: port_open(self.sink_port) or not self.sink.alive(), timeout=20, what="the SMTP sink")
        if not self.sink.alive():
            raise PhaseFailed(f"SMTP sink exited:\n{self.sink.output(4000)}")

    def teardown(self) -> None:
        for process in reversed(self.processes):
            try:
                self.stop(process)
            except Exception as error:  # noqa: BLE001 - clean up the rest regardless
                self.log(f"could not stop {process.name}: {error}")
        self.watcher.stop()
        if self._db is not None:
            self._db.close()
        if self.created_vhost:
            vhost_delete(self.vhost)
        if self.created_db:
            database_drop(self.db_name)
        if self.args.keep_logs:
            self.log(f"logs kept in {self.run_dir}")
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    # --- processes ------------------------------------------------------------------------

    def start_web(self, workers: int | None = None) -> None:
        """`gunicorn eventplatform.wsgi` as deployed: the project's gunicorn.conf.py decides the
        workers (WEB_CONCURRENCY) unless --web-workers (or `workers`) is given; only the address is ours."""
        workers = workers or self.config.web_workers
        self.web_port = free_port()
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        metrics_dir = self.run_dir / "web-metrics"
        metrics_dir.mkdir(exist_ok=True)
        extra = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
        if workers:
            extra["WEB_CONCURRENCY"] = str(workers)
        if self.args.web_server == "granian":  # measured beside gunicorn (docs/performance.md)
            command = [
                str(Path(PYTHON).with_name("granian")),
                "--interface",
                "wsgi",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.web_port),
                "--workers",
                str(workers or 2),
                "eventplatform.wsgi:application",
            ]
        else:
            command = procfile_command("web", environ={**self.env(), "HOST": "127.0.0.1", "PORT": str(self.web_port)})
        self.web = self.start("web", "web", command, **extra)
        wait_until(lambda: http_ok(f"{self.web_url}/healthz") or not self.web.alive(), timeout=60, what="gunicorn")
        if not self.web.alive():
            raise PhaseFailed(f"gunicorn exited:\n{self.web.output(4000)}")
        time.sleep(1.0)  # let every worker boot
        self.web_workers = len(self.children(self.web))
        self.log(f"gunicorn up with {self.web_workers} workers")

    def start_relay(self) -> ManagedProcess:
        relay = self.start(
            f"relay-{len(self.relays) + 1}",
            "relay",
            procfile_command("relay", environ=self.env(), options={"--metrics-port": str(free_port())}),
        )
        wait_until(lambda: relay.log_contains("relay.started") or not relay.alive(), timeout=60, what="the relay")
        if not relay.alive():
            raise PhaseFailed(f"relay exited:\n{relay.output(4000)}")
        time.sleep(1.0)  # it LISTENs right after logging relay.started
        self.relays.append(relay)
        return relay

    def start_worker(
        self, name: str, queues: list[str] | None = None, processes: int | None = None, **env: str
    ) -> ManagedProcess:
        args = procfile_command(
            "worker",
            environ=self.env(),
            options={
                "--processes": str(processes or self.config.worker_processes),
                "--threads": str(self.config.worker_threads),
            },
        )
        if queues:
            args += ["--queues", *queues]
        return self.start(name, "worker", args, **env)

    def wait_worker_ready(self, worker: ManagedProcess, timeout: float = 60, processes: int | None = None) -> None:
        wait_until(
            lambda: worker.output(1_000_000).count("Worker process is ready for action")
            >= (processes or self.config.worker_processes)
            or not worker.alive(),
            timeout=timeout,
            what=f"{worker.name} to be ready",
        )
        if not worker.alive():
            raise PhaseFailed(f"{worker.name} exited:\n{worker.output(4000)}")

    def loadgen(
        self,
        prefix: str,
        *,
        mode: str,
        clients: int = 1,
        rate: float = 0,
        duration: float = 0,
        count: int | None = None,
        max_requests: int = 30_000,
    ) -> dict[str, Any]:
        out = self.run_dir / f"loadgen-{prefix}.json"
        args = [
            PYTHON,
            "-m",
            "bench.loadgen",
            "--port",
            str(self.web_port),
            "--path",
            f"/webhooks/{PORTAL_SLUG}/",
            "--secret",
            self.secret,
            "--prefix",
            prefix,
            "--mode",
            mode,
            "--clients",
            str(clients),
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--max-requests",
            str(max_requests),
            "--out",
            str(out),
        ]
        if count is not None:
            args += ["--count", str(count)]
        process = self.start(f"loadgen-{prefix}", "loadgen", args)
        try:
            process.process.wait(timeout=max(duration, 1) * 4 + 120)
        finally:
            self.stop(process)
        if process.process.returncode != 0 or not out.exists():
            raise PhaseFailed(f"load generator failed:\n{process.output(4000)}")
        return json.loads(out.read_text())

    def outbox_pending(self) -> int:
        return self.sql("SELECT count(*) FROM outbox_outboxmessage WHERE published_at IS NULL")[0][0]

    def outbox_mark_published(self) -> None:
        """Rows left by a phase that had no relay running: out of the next phase's way."""
        self.sql("UPDATE outbox_outboxmessage SET published_at = created_at WHERE published_at IS NULL")

    def children(self, process: ManagedProcess) -> list[int]:
        """PIDs of the processes a process forked (gunicorn's or Dramatiq's worker processes)."""
        try:
            return [int(pid) for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
        except OSError:
            return []

    def profile_dir(self) -> Path:
        path = Path(self.args.profile_dir) if self.args.profile_dir else RESULTS_DIR / f"profile-{self.run_id}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def spy(self, process: ManagedProcess, label: str, seconds: float) -> profiling.Spy | None:
        if not self.args.profile:
            return None
        return profiling.Spy(self.children(process) or [process.pid], self.run_dir, label, seconds)

    def spy_finish(self, spy: profiling.Spy | None, label: str) -> dict[str, Any] | None:
        if spy is None:
            return None
        stacks = spy.finish()
        out = self.profile_dir() / f"{label}.collapsed.txt"
        profiling.write_collapsed(stacks, out)
        return profiling.summarize(stacks) | {"collapsed_stacks": str(out)}

    # --- the stack as deployed, and what reached the sink (end to end, burst, scale-out) ---

    def start_stack(self) -> None:
        """Web, one relay and the workers, as deployed, with nothing left over from earlier phases."""
        if self.web is None:
            self.start_web()
        if not self.relays:
            self.start_relay()
        if self.worker is None:
            self.worker = self.start_worker("worker")
            self.wait_worker_ready(self.worker)
        self.outbox_mark_published()

    def delivered(self, accepted: dict[str, float]) -> dict[str, float]:
        """Recipient -> when the SMTP sink received its first e-mail, for the accepted webhooks."""
        found: dict[str, float] = {}
        for received, _, recipient in self.sink_records():
            if recipient in accepted and recipient not in found:
                found[recipient] = received
        return found

    def duplicates(self, accepted: dict[str, float]) -> int:
        """E-mails the SMTP sink received beyond the first for each of these recipients."""
        copies = Counter(recipient for _, _, recipient in self.sink_records() if recipient in accepted)
        return sum(count - 1 for count in copies.values())

    def spy_stack(self, label: str, seconds: float) -> dict[str, profiling.Spy | None]:
        """With --profile: py-spy on the workers, the relay and the web workers for `seconds`."""
        return {
            kind: self.spy(process, f"{label}-{kind}", seconds)
            for kind, process in (("worker", self.worker), ("relay", self.relays[0]), ("web", self.web))
        }

    # --- the run --------------------------------------------------------------------------

    def run(self, phases: dict[str, Callable[[Bench], dict[str, Any]]]) -> dict[str, Any]:
        """Each phase in turn (name -> its module's `run`); a failed one is recorded, the next runs."""
        self.setup()
        for name, phase in phases.items():
            started = time.time()
            try:
                self.phases[name] = phase(self)
            except (PhaseFailed, TimeoutError) as error:
                self.errors.append(f"{name}: {error}")
                self.log(f"phase {name} FAILED: {error}")
                for process in self.processes:
                    if process.kind in ("web", "relay", "worker") and process.alive():
                        self.log(f"--- {process.name} log tail ---\n{process.output(2000)}")
            self.phases.setdefault(name, {})["phase_seconds"] = round(time.time() - started, 1)
        self.watcher.poll()
        self.phases["memory"] = {
            "web_worker_mb": self.watcher.peak_mb("web", "child"),
            "web_master_mb": self.watcher.peak_mb("web", "root"),
            "relay_mb": self.watcher.peak_mb("relay", "root"),
            "dramatiq_process_mb": self.watcher.peak_mb("worker", "child"),
            "dramatiq_master_mb": self.watcher.peak_mb("worker", "root"),
            "smtp_sink_mb": self.watcher.peak_mb("smtp_sink", "root"),
            "bench_worker_process_mb": self.watcher.peak_mb("bench_worker", "child"),
        }
        return self.phases


def summarize_closed(result: dict[str, Any]) -> dict[str, Any]:
    records = result["records"]
    ok = [r for r in records if r[3] == 202]
    start = min(r[1] for r in records)
    end = max(r[1] + r[2] for r in records)
    latencies = [r[2] * 1000 for r in ok]
    return {
        "accepted": len(ok),
        "other_statuses": dict(Counter(str(r[3]) for r in records if r[3] != 202)),
        "window_s": end - start,
        "accepted_per_s": len(ok) / (end - start),
        "p50_ms": report.percentile(latencies, 50),
        "p99_ms": report.percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else None,
        "presigned_exhausted": result["exhausted"],
        "body_bytes": result["body_bytes"],
        "loadgen_cpu_share": result["loadgen_cpu_seconds"] / result["elapsed"],
    }


def schedule_stats(result: dict[str, Any]) -> dict[str, Any]:
    """How far behind its schedule the open-loop generator sent (it should be ~0)."""
    late = [r[4] * 1000 for r in result["records"]]
    return {
        "late_p50_ms": report.percentile(late, 50),
        "late_p99_ms": report.percentile(late, 99),
        "loadgen_cpu_share": result["loadgen_cpu_seconds"] / result["elapsed"],
    }
