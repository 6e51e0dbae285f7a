"""The pipeline benchmark: `make bench` (about 8 minutes) and `make bench-quick` (under 2 minutes).

Starts the real stack (gunicorn, run_relay, rundramatiq, an aiosmtpd sink in its own process) on
this machine's PostgreSQL and RabbitMQ, in a database and a vhost made for this run and dropped at
the end, measures the raw limits and the pipeline's figures in the same run, prints one table and
writes it all as JSON under bench/results/. Method and latest figures: docs/performance.md.

    .venv/bin/python bench/run.py [--quick] [--phases raw,ingest,relay,workers,e2e] [--profile]
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dramatiq  # noqa: E402
import pika  # noqa: E402
import psycopg  # noqa: E402
from dramatiq.brokers.rabbitmq import RabbitmqBroker  # noqa: E402

from apps.outbox.publisher import ConfirmingPublisher, OutgoingMessage  # noqa: E402
from bench import profiling, report  # noqa: E402
from bench.loadgen import webhook_body  # noqa: E402
from bench.stack import (  # noqa: E402
    PYTHON,
    Watcher,
    cpu_ms_per,
    cpu_usage,
    database_create,
    database_drop,
    free_port,
    http_ok,
    port_open,
    vhost_create,
    vhost_delete,
    wait_until,
)
from eventplatform.procfile import procfile_command  # noqa: E402
from tests.support.processes import ManagedProcess  # noqa: E402

PORTAL_SLUG = "bench"
PHASES = ("raw", "ingest", "relay", "workers", "e2e", "burst")
# The hops a webhook's CPU is accounted to (the SMTP sink and the load generator are the harness).
STACK_KINDS = ("web", "relay", "worker", "postgres", "rabbitmq")
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
            process.stop()

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

    # --- phase 1: raw limits --------------------------------------------------------------

    def phase_raw(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        self.log("raw: PostgreSQL two-row insert transactions with pgbench")
        result["pg"] = self.raw_pg()
        self.log(f"raw: {result['pg']['commits_per_s']:,.0f} commits/s; RabbitMQ confirmed publishes")
        result["rabbitmq"] = self.raw_rabbitmq()
        self.log(f"raw: {result['rabbitmq']['publishes_per_s']:,.0f} publishes/s; Dramatiq no-op actor")
        result["noop"] = self.raw_actor("bench_noop", self.config.noop_messages)
        self.log(f"raw: no-op {result['noop']['per_s']:,.0f}/s; bare e-mail actor")
        result["bare_email"] = self.raw_actor("bench_email", self.config.email_messages)
        self.log(f"raw: bare e-mail {result['bare_email']['per_s']:,.0f}/s")
        return result

    def raw_pg(self) -> dict[str, Any]:
        """pgbench, 16 connections, each transaction one event row and one outbox row.

        The tables are copies of the real ones (same columns, indexes, unique constraints, the
        event's foreign key to the portal and a statement-level NOTIFY trigger on the outbox), so
        the database does what the web view makes it do, and nothing else."""
        self.sql("""
            CREATE TABLE bench_event (LIKE webhooks_webhookevent INCLUDING ALL);
            ALTER TABLE bench_event ADD FOREIGN KEY (portal_id) REFERENCES webhooks_portal (id);
            CREATE TABLE bench_outbox (LIKE outbox_outboxmessage INCLUDING ALL);
            CREATE FUNCTION bench_outbox_notify() RETURNS trigger AS $$
            BEGIN PERFORM pg_notify('bench_outbox_new', ''); RETURN NULL; END; $$ LANGUAGE plpgsql;
            CREATE TRIGGER bench_outbox_notify AFTER INSERT ON bench_outbox
                FOR EACH STATEMENT EXECUTE FUNCTION bench_outbox_notify();
        """)
        portal_id = self.sql("SELECT id FROM webhooks_portal WHERE slug = %s", [PORTAL_SLUG])[0][0]
        body = webhook_body("pgbench", 0).decode().replace("'", "''")
        script = self.run_dir / "two_row_insert.sql"
        script.write_text(
            "BEGIN;\n"
            "INSERT INTO bench_event (id, portal_id, delivery_id, type, status, raw_body, payload, errors, received_at)"
            f" VALUES (gen_random_uuid(), {portal_id}, gen_random_uuid()::text, 'registration.created', 'accepted',"
            f" convert_to('{body}', 'UTF8'), '{body}'::jsonb, NULL, now())"
            " ON CONFLICT (portal_id, delivery_id) DO NOTHING RETURNING id;\n"
            "INSERT INTO bench_outbox (id, queue_name, actor_name, kwargs, options, created_at, available_at,"
            " published_at) VALUES (gen_random_uuid(), 'registrations', 'webhook_event_apply',"
            " jsonb_build_object('event_id', gen_random_uuid()::text),"
            " jsonb_build_object('correlation_id', gen_random_uuid()::text), now(), now(), NULL);\n"
            "COMMIT;\n"
        )
        args = [
            "pgbench",
            "-n",
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-M",
            "prepared",
            "-c",
            str(self.config.pg_clients),
            "-j",
            str(min(self.config.pg_clients, os.cpu_count() or 1)),
            "-T",
            str(int(self.config.pg_seconds)),
            "-f",
            str(script),
            self.db_name,
        ]
        before = self.watcher.cpu_snapshot()
        process = self.start("pgbench", "pgbench", args)
        process.process.wait(timeout=self.config.pg_seconds + 120)
        after = self.watcher.cpu_snapshot()
        output = process.output(4000)
        self.stop(process)
        match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", output)
        latency = re.search(r"latency average = ([\d.]+) ms", output)
        if process.process.returncode != 0 or not match:
            raise PhaseFailed(f"pgbench failed:\n{output}")
        rows = self.sql("SELECT count(*) FROM bench_event")[0][0]
        return {
            "commits_per_s": float(match.group(1)),
            "latency_avg_ms": float(latency.group(1)) if latency else None,
            "clients": self.config.pg_clients,
            "seconds": self.config.pg_seconds,
            "transactions": rows,
            "event_body_bytes": len(webhook_body("pgbench", 0)),
            "cpu_cores": cpu_usage(before, after),
            "cpu_ms_per_commit": cpu_ms_per(before, after, rows, ("postgres", "pgbench")),
        }

    def raw_rabbitmq(self) -> dict[str, Any]:
        """ConfirmingPublisher (what the relay uses), persistent 1 KB messages, confirms awaited per 100."""
        queue, total, batch = "bench_raw", self.config.rabbit_messages, 100
        broker = RabbitmqBroker(url=self.broker_url, middleware=[])
        broker.declare_queue(queue, ensure=True)
        body = b'{"pad":"' + b"x" * 1014 + b'"}'
        messages = [OutgoingMessage(queue, body, uuid.uuid4().hex) for _ in range(total + 1)]
        publisher = ConfirmingPublisher(self.broker_url)
        try:
            publisher.publish_batch(messages[:1])  # connect outside the timed part
            before = self.watcher.cpu_snapshot()
            started = time.perf_counter()
            for i in range(1, total + 1, batch):
                publisher.publish_batch(messages[i : i + batch])
            elapsed = time.perf_counter() - started
            after = self.watcher.cpu_snapshot()
        finally:
            publisher.close()
            broker.close()
        depth = self.queue_depth(queue)
        self.queues_drop(queue)
        return {
            "publishes_per_s": total / elapsed,
            "messages": total,
            "batch": batch,
            "body_bytes": len(body),
            "queue_depth_after": depth,
            "cpu_cores": cpu_usage(before, after),
            "cpu_ms_per_message": cpu_ms_per(before, after, total, ("rabbitmq", "harness")),
        }

    def raw_actor(self, actor: str, total: int) -> dict[str, Any]:
        """Fill the actor's queue, then start a worker on it and time first start to last done."""
        broker = RabbitmqBroker(url=self.broker_url, middleware=[])
        broker.declare_queue(actor, ensure=True)
        broker.close()
        publisher = ConfirmingPublisher(self.broker_url)
        messages = []
        for _ in range(total):
            message = dramatiq.Message(queue_name=actor, actor_name=actor, args=(), kwargs={}, options={})
            messages.append(OutgoingMessage(actor, message.encode(), message.message_id))
        try:
            for i in range(0, total, 500):
                publisher.publish_batch(messages[i : i + 500])
        finally:
            publisher.close()
        stats_dir = self.run_dir / f"stats-{actor}"
        stats_dir.mkdir()
        args = [
            PYTHON,
            "-m",
            "dramatiq",
            "--path",
            ".",
            "--processes",
            str(self.config.worker_processes),
            "--threads",
            str(self.config.worker_threads),
            "django_dramatiq.setup",
            "bench.actors",
            "--queues",
            actor,
        ]
        worker = self.start(f"bench-worker-{actor}", "bench_worker", args, BENCH_STATS_DIR=str(stats_dir))

        def totals() -> tuple[int, float, float]:
            count, first, last = 0, float("inf"), 0.0
            for path in stats_dir.glob("*.json"):
                try:
                    entry = json.loads(path.read_text()).get(actor)
                except (OSError, ValueError):
                    continue
                if entry:
                    count, first, last = count + entry[0], min(first, entry[1]), max(last, entry[2])
            return count, first, last

        try:
            self.wait_worker_ready(worker)
            before, done_before = self.watcher.cpu_snapshot(), totals()[0]
            wait_until(
                lambda: totals()[0] >= total or not worker.alive(),
                timeout=max(60.0, total / 20),
                interval=0.2,
                what=f"{actor} to drain {total} messages",
            )
            if not worker.alive():
                raise PhaseFailed(f"bench worker exited:\n{worker.output(4000)}")
            time.sleep(0.2)
            after = self.watcher.cpu_snapshot()
        finally:
            self.stop(worker)
        count, first, last = totals()
        per_s = count / (last - first)
        return {
            "per_s": per_s,
            "per_s_per_process": per_s / self.config.worker_processes,
            "messages": count,
            "processes": self.config.worker_processes,
            "threads": self.config.worker_threads,
            "cpu_cores": cpu_usage(before, after),
            "cpu_ms_per_message": cpu_ms_per(
                before, after, count - done_before, ("bench_worker", "rabbitmq", "smtp_sink")
            ),
        }

    # --- phase 2: ingest ------------------------------------------------------------------

    def phase_ingest(self) -> dict[str, Any]:
        if self.web is None:
            self.start_web()
        workers = self.web_workers
        self.loadgen("warm", mode="closed", clients=2 * workers, count=25 * workers)
        levels = {}
        for clients in report.INGEST_LEVELS:
            self.log(f"ingest: {clients} clients for {self.config.ingest_seconds:g} s")
            before = self.watcher.cpu_snapshot()
            result = self.loadgen(
                f"in{clients}",
                mode="closed",
                clients=clients,
                duration=self.config.ingest_seconds,
                max_requests=int(3000 * self.config.ingest_seconds) + 1000,
            )
            after = self.watcher.cpu_snapshot()
            levels[clients] = summarize_closed(result) | {
                "cpu_cores": cpu_usage(before, after),
                "cpu_ms_per_accepted": cpu_ms_per(
                    before, after, sum(1 for r in result["records"] if r[3] == 202), ("web", "postgres", "loadgen")
                ),
            }
            self.log(
                f"ingest: {clients} clients: {levels[clients]['accepted_per_s']:,.0f} accepted/s, "
                f"p50 {levels[clients]['p50_ms']:.1f} ms, p99 {levels[clients]['p99_ms']:.1f} ms"
            )
        result: dict[str, Any] = {"levels": levels, "web_workers": workers}
        if self.args.profile:
            result["profile"] = self.profile_ingest()
        self.outbox_mark_published()
        return result

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

    def profile_ingest(self) -> dict[str, Any] | None:
        """py-spy on every gunicorn worker during an extra 16-client run (not one of the figures)."""
        seconds = max(5, int(self.config.ingest_seconds))
        spy = self.spy(self.web, "ingest", seconds)
        time.sleep(0.5)
        self.loadgen("prof16", mode="closed", clients=16, duration=seconds - 1, max_requests=3000 * seconds)
        return self.spy_finish(spy, "ingest")

    # --- phase 3: relay -------------------------------------------------------------------

    def phase_relay(self) -> dict[str, Any]:
        self.outbox_mark_published()
        result: dict[str, Any] = {}
        if not self.relays:
            self.start_relay()
        self.log(f"relay: one relay publishing {self.config.relay_rows:,} rows")
        result["one"] = self.relay_drain(self.config.relay_rows)
        self.log(f"relay: one relay {result['one']['rows_per_s']:,.0f} rows/s; now two relays")
        second = self.start_relay()
        result["two"] = self.relay_drain(self.config.relay_rows)
        self.log(f"relay: two relays {result['two']['rows_per_s']:,.0f} rows/s")
        self.stop(second)
        self.relays.remove(second)
        self.queues_drop("bench_relay")
        if self.web is None:
            self.start_web()
        rate, seconds = self.config.lag_rate, self.config.lag_seconds
        self.log(f"relay: lag at a steady {rate:g} webhooks/s for {seconds:g} s")
        window_start = dt.datetime.now(dt.UTC)
        before = self.watcher.cpu_snapshot()
        sent = self.loadgen("lag", mode="open", rate=rate, duration=seconds)
        after = self.watcher.cpu_snapshot()
        wait_until(lambda: self.outbox_pending() == 0, timeout=120, what="the relay to publish the lag rows")
        lags = [
            row[0] * 1000
            for row in self.sql(
                "SELECT extract(epoch FROM published_at - created_at)::float8 FROM outbox_outboxmessage "
                "WHERE queue_name = 'registrations' AND created_at >= %s",
                [window_start],
            )
        ]
        accepted = sum(1 for r in sent["records"] if r[3] == 202)
        result["lag"] = {
            "rate": rate,
            "seconds": seconds,
            "accepted": accepted,
            "rows": len(lags),
            "p50_ms": report.percentile(lags, 50),
            "p99_ms": report.percentile(lags, 99),
            "max_ms": max(lags) if lags else None,
            "schedule": schedule_stats(sent),
            "cpu_cores": cpu_usage(before, after),
        }
        self.log(f"relay: lag p50 {result['lag']['p50_ms']:.1f} ms, p99 {result['lag']['p99_ms']:.1f} ms")
        self.queues_drop("registrations", purge_only=True)
        return result

    def relay_drain(self, rows: int) -> dict[str, Any]:
        """Insert `rows` unpublished rows in one transaction; time commit to the last confirm."""
        wait_until(lambda: self.outbox_pending() == 0, timeout=60, what="an empty outbox")
        marker = dt.datetime.now(dt.UTC)
        before = self.watcher.cpu_snapshot()
        with psycopg.connect(self.dsn) as conn:
            conn.execute(
                "INSERT INTO outbox_outboxmessage (id, queue_name, actor_name, kwargs, options, created_at,"
                " available_at, published_at) SELECT gen_random_uuid(), 'bench_relay', 'webhook_event_apply',"
                " jsonb_build_object('event_id', gen_random_uuid()::text),"
                " jsonb_build_object('correlation_id', gen_random_uuid()::text), now(), now(), NULL"
                " FROM generate_series(1, %s)",
                [rows],
            )
        committed = time.time()
        wait_until(
            lambda: self.outbox_pending() == 0,
            timeout=max(120.0, rows / 50),
            interval=0.05,
            what=f"the relay to publish {rows} rows",
        )
        after = self.watcher.cpu_snapshot()
        last = self.sql(
            "SELECT max(published_at) FROM outbox_outboxmessage WHERE queue_name = 'bench_relay' AND created_at >= %s",
            [marker],
        )[0][0]
        elapsed = last.timestamp() - committed
        depth = self.queue_depth("bench_relay")
        self.queues_drop("bench_relay", purge_only=True)
        return {
            "rows": rows,
            "seconds": elapsed,
            "rows_per_s": rows / elapsed,
            "relays": len(self.relays),
            "queue_depth_after": depth,
            "cpu_cores": cpu_usage(before, after),
            "cpu_ms_per_row": cpu_ms_per(before, after, rows, ("relay", "postgres", "rabbitmq")),
        }

    # --- phase 4: workers -----------------------------------------------------------------

    def phase_workers(self) -> dict[str, Any]:
        total = self.config.worker_notifications
        if self.web is None:
            self.start_web()
        if not self.relays:
            self.start_relay()
        self.queues_drop("registrations", "notifications", purge_only=True)
        self.log(f"workers: posting {total:,} webhooks, then applying them with the registrations queue only")
        sent = self.loadgen("wk", mode="closed", clients=16, count=total)
        accepted = sum(1 for r in sent["records"] if r[3] == 202)
        if accepted != total:
            raise PhaseFailed(f"only {accepted} of {total} webhooks accepted: {Counter(r[3] for r in sent['records'])}")

        def created_count() -> int:
            return self.sql("SELECT count(*) FROM notifications_notification WHERE recipient LIKE 'wk-%'")[0][0]

        def notifications_ready() -> bool:
            return created_count() >= total and self.outbox_pending() == 0

        # CPU per item is counted from the moment every worker process is ready (start-up excluded).
        # Applying only: the sends queue up as notification_send messages (the path of retries,
        # replays and reminders), drained below by the workers as deployed.
        applier = self.start_worker("worker-apply", queues=["registrations"], NOTIFICATION_SEND_AT_ONCE="false")
        self.wait_worker_ready(applier)
        apply_before, applied_before = self.watcher.cpu_snapshot(), created_count()
        spy = self.spy(applier, "apply", min(30.0, total / 100 + 1))

        try:
            wait_until(
                lambda: notifications_ready() or not applier.alive(),
                timeout=max(120.0, total / 10),
                interval=0.5,
                what=f"{total} notifications to be created",
            )
            apply_after = self.watcher.cpu_snapshot()
        finally:
            self.stop(applier)
        apply_profile = self.spy_finish(spy, "apply")
        first, last = self.sql(
            "SELECT min(created_at), max(created_at) FROM notifications_notification WHERE recipient LIKE 'wk-%'"
        )[0]
        apply_per_s = (total - 1) / (last - first).total_seconds() if total > 1 else None
        self.log(
            f"workers: applied at {apply_per_s or 0:,.0f}/s; {total:,} notification_send messages queued "
            f"({self.queue_depth('notifications')} in RabbitMQ); starting the workers"
        )

        def sent_count() -> int:
            return self.sql(
                "SELECT count(*) FROM notifications_notification WHERE recipient LIKE 'wk-%' AND status = 'sent'"
            )[0][0]

        self.worker = self.start_worker("worker")
        self.wait_worker_ready(self.worker)
        before, sent_before = self.watcher.cpu_snapshot(), sent_count()
        spy = self.spy(self.worker, "send", min(30.0, total / 100 + 1))

        wait_until(
            lambda: sent_count() >= total or not self.worker.alive(),
            timeout=max(120.0, total / 10),
            interval=0.2,
            what=f"{total} e-mails to be sent",
        )
        after = self.watcher.cpu_snapshot()
        if not self.worker.alive():
            raise PhaseFailed(f"worker exited:\n{self.worker.output(4000)}")
        first_claim, last_sent, dead = self.sql(
            "SELECT min(claimed_at), max(sent_at), count(*) FILTER (WHERE status <> 'sent') "
            "FROM notifications_notification WHERE recipient LIKE 'wk-%'"
        )[0]
        elapsed = (last_sent - first_claim).total_seconds()
        at_sink = len({r[2] for r in self.sink_records() if r[2].startswith("wk-")})
        per_s = total / elapsed
        send_profile = self.spy_finish(spy, "send")
        self.log(f"workers: {per_s:,.0f} e-mails/s")
        return {
            "notifications": total,
            "emails_per_s": per_s,
            "emails_per_s_per_process": per_s / self.config.worker_processes,
            "seconds": elapsed,
            "apply_per_s": apply_per_s,
            "apply_cpu_cores": cpu_usage(apply_before, apply_after),
            "apply_cpu_ms_per_event": cpu_ms_per(
                apply_before, apply_after, total - applied_before, ("worker", "postgres", "rabbitmq", "relay")
            ),
            "cpu_ms_per_email": cpu_ms_per(
                before, after, total - sent_before, ("worker", "postgres", "rabbitmq", "smtp_sink")
            ),
            "received_by_smtp": at_sink,
            "not_sent": dead,
            "processes": self.config.worker_processes,
            "threads": self.config.worker_threads,
            "cpu_cores": cpu_usage(before, after),
            **({"profile_apply": apply_profile, "profile_send": send_profile} if self.args.profile else {}),
        }

    # --- phase 5: end to end --------------------------------------------------------------

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

    def phase_e2e(self) -> dict[str, Any]:
        self.start_stack()
        # What the stack costs doing nothing (polls, heartbeats, timers): at low rates it is a
        # visible part of the CPU per webhook.
        time.sleep(2)
        before = self.watcher.cpu_snapshot()
        time.sleep(self.config.idle_seconds)
        idle = cpu_usage(before, self.watcher.cpu_snapshot())
        self.log("e2e: idle stack uses " + ", ".join(f"{k} {v:.3f}" for k, v in idle.items() if v >= 0.001) + " cores")
        rates = {}
        for rate in report.E2E_RATES:
            seconds = self.config.e2e_seconds if rate == min(report.E2E_RATES) else self.config.e2e_sustained_seconds
            self.log(f"e2e: {rate} webhooks/s for {seconds:g} s")
            rates[rate] = self.e2e_run(rate, seconds)
            r = rates[rate]
            self.log(
                f"e2e: {rate}/s: p50 {r['p50_ms'] or 0:.0f} ms, p95 {r['p95_ms'] or 0:.0f} ms, "
                f"p99 {r['p99_ms'] or 0:.0f} ms, backlog at end {r['backlog_at_end']}, "
                f"{'kept up' if r['kept_up'] else 'fell behind'}"
            )
        return {"rates": rates, "idle_cpu_cores": idle}

    def e2e_run(self, rate: int, seconds: float) -> dict[str, Any]:
        prefix = f"e2e{rate}"
        before = self.watcher.cpu_snapshot()
        spies = self.spy_stack(f"e2e{rate}", seconds)
        sent = self.loadgen(prefix, mode="open", rate=rate, duration=seconds)
        profiles = {kind: self.spy_finish(spy, f"e2e{rate}-{kind}") for kind, spy in spies.items()}
        accepted = {f"{prefix}-{r[0]}@example.org": r[1] for r in sent["records"] if r[3] == 202}
        window_end = max(r[1] for r in sent["records"])
        try:
            wait_until(
                lambda: len(self.delivered(accepted)) >= len(accepted),
                timeout=self.config.drain_timeout,
                interval=0.2,
                what="the e-mails",
            )
        except TimeoutError:
            pass
        after = self.watcher.cpu_snapshot()  # sending and draining: all the work these webhooks caused
        found = self.delivered(accepted)
        latencies = [(found[r] - accepted[r]) * 1000 for r in found]
        backlog = sum(1 for r, t_sent in accepted.items() if t_sent <= window_end and found.get(r, 1e18) > window_end)
        missing = len(accepted) - len(found)
        records = sent["records"]
        achieved = len(records) / (max(r[1] for r in records) - min(r[1] for r in records))
        return {
            "rate": rate,
            "seconds": seconds,
            "sent": len(records),
            "accepted": len(accepted),
            "achieved_per_s": achieved,
            "delivered": len(found),
            "missing": missing,
            "duplicates": self.duplicates(accepted),
            "p50_ms": report.percentile(latencies, 50),
            "p95_ms": report.percentile(latencies, 95),
            "p99_ms": report.percentile(latencies, 99),
            "max_ms": max(latencies) if latencies else None,
            "backlog_at_end": backlog,
            # Kept up: every e-mail arrived, and what was still in flight when the last webhook was
            # sent is at most one second of traffic (Little's law: rate x latency when it keeps up).
            "kept_up": missing == 0 and backlog <= rate,
            "drain_after_end_s": (max(found.values()) - window_end) if found else None,
            "http_statuses": dict(Counter(str(r[3]) for r in records)),
            "schedule": schedule_stats(sent),
            "cpu_cores": cpu_usage(before, after),
            "cpu_ms_per_webhook": cpu_ms_per(before, after, len(accepted), (*STACK_KINDS, "smtp_sink")),
            **({"profiles": profiles} if self.args.profile else {}),
        }

    def spy_stack(self, label: str, seconds: float) -> dict[str, profiling.Spy | None]:
        """With --profile: py-spy on the workers, the relay and the web workers for `seconds`."""
        return {
            kind: self.spy(process, f"{label}-{kind}", seconds)
            for kind, process in (("worker", self.worker), ("relay", self.relays[0]), ("web", self.web))
        }

    # --- phase 6: a burst -----------------------------------------------------------------

    def phase_burst(self) -> dict[str, Any]:
        """A ticket drop: burst_webhooks registrations posted as fast as 16 clients can, the whole
        stack running; from the first post to the last e-mail accepted by SMTP, and none doubled."""
        self.start_stack()
        total = self.config.burst_webhooks
        self.log(f"burst: {total:,} registrations from 16 clients")
        before = self.watcher.cpu_snapshot()
        spies = self.spy_stack("burst", min(30.0, total / 150 + 2))
        sent = self.loadgen("burst", mode="closed", clients=16, count=total)
        profiles = {kind: self.spy_finish(spy, f"burst-{kind}") for kind, spy in spies.items()}
        records = sent["records"]
        accepted = {f"burst-{r[0]}@example.org": r[1] for r in records if r[3] == 202}
        first_post, last_answer = min(r[1] for r in records), max(r[1] + r[2] for r in records)
        try:
            wait_until(
                lambda: len(self.delivered(accepted)) >= len(accepted),
                timeout=self.config.drain_timeout,
                interval=0.2,
                what="the burst's e-mails",
            )
        except TimeoutError:
            pass
        after = self.watcher.cpu_snapshot()
        time.sleep(2)  # a duplicate would arrive within this window
        found = self.delivered(accepted)
        last_email = max(found.values()) if found else None
        result = {
            "webhooks": total,
            "accepted": len(accepted),
            "delivered": len(found),
            "missing": len(accepted) - len(found),
            "duplicates": self.duplicates(accepted),
            "posting_s": last_answer - first_post,
            "accepted_per_s": len(accepted) / (last_answer - first_post),
            "last_email_s": (last_email - first_post) if last_email else None,
            "emails_per_s": len(found) / (last_email - first_post) if last_email else None,
            "http_statuses": dict(Counter(str(r[3]) for r in records)),
            "cpu_cores": cpu_usage(before, after),
            "cpu_ms_per_webhook": cpu_ms_per(before, after, len(accepted), (*STACK_KINDS, "smtp_sink")),
            **({"profiles": profiles} if self.args.profile else {}),
        }
        self.log(
            f"burst: last e-mail {result['last_email_s'] or 0:.1f} s after the first post "
            f"({result['emails_per_s'] or 0:,.0f} e-mails/s), missing {result['missing']}, "
            f"duplicates {result['duplicates']}"
        )
        return result

    # --- --scale-out: what each added process brings --------------------------------------

    def phase_scaleout(self) -> dict[str, Any]:
        """The whole pipeline under the same closed-loop load, step by step with more processes:
        one gunicorn (2 workers), one relay and one `rundramatiq --processes 1` first; then a second
        relay; then a second `rundramatiq` (a second machine's worker); then twice the web workers.
        Each step: accepted webhooks/s while the load runs, e-mails/s from the first webhook to the
        last e-mail, the share each relay and each worker group did (from their logs), and the
        check that nothing was doubled: one e-mail per webhook at the SMTP sink, rows published
        by the relays adding up to the rows created (no row published by two relays)."""
        steps = [
            ("1 web (2 workers), 1 relay, 1 worker", 2, 1, 1),
            ("+ a second relay", 2, 2, 1),
            ("+ a second worker group", 2, 2, 2),
            ("+ web workers (4)", 4, 2, 2),
        ]
        workers: list[ManagedProcess] = []
        results = []
        for index, (label, web_workers, relays, worker_groups) in enumerate(steps):
            if self.web is None or self.web_workers != web_workers:
                if self.web is not None:
                    self.stop(self.web)
                self.start_web(workers=web_workers)
            while len(self.relays) < relays:
                self.start_relay()
            while len(workers) < worker_groups:
                worker = self.start_worker(f"worker-{len(workers) + 1}", processes=1)
                self.wait_worker_ready(worker, processes=1)
                workers.append(worker)
            self.log(f"scale-out: {label}: {self.config.scale_clients} clients for {self.config.scale_seconds:g} s")
            results.append(
                {
                    "step": label,
                    "web_workers": self.web_workers,
                    "relays": len(self.relays),
                    "worker_groups": len(workers),
                }
                | self.scaleout_run(f"so{index}", workers)
            )
            r = results[-1]
            self.log(
                f"scale-out: {label}: {r['accepted_per_s']:,.0f} accepted/s, {r['emails_per_s']:,.0f} e-mails/s "
                f"end to end, relays {r['published_by_relay']}, workers {r['sent_by_worker']}, "
                f"missing {r['missing']}, duplicates {r['duplicates']}"
            )
        base = results[0]
        for r in results:
            for key in ("accepted_per_s", "emails_per_s"):
                r[f"{key}_vs_first"] = round(r[key] / base[key], 2) if base[key] else None
        return {"steps": results}

    def scaleout_run(self, prefix: str, workers: list[ManagedProcess]) -> dict[str, Any]:
        logs = {p.name: p.log_path.stat().st_size for p in [*self.relays, *workers]}
        created_before = self.sql("SELECT count(*) FROM outbox_outboxmessage")[0][0]
        before = self.watcher.cpu_snapshot()
        sent = self.loadgen(
            prefix,
            mode="closed",
            clients=self.config.scale_clients,
            duration=self.config.scale_seconds,
            max_requests=int(3000 * self.config.scale_seconds) + 1000,
        )
        accepted = {f"{prefix}-{r[0]}@example.org": r[1] for r in sent["records"] if r[3] == 202}
        try:
            wait_until(
                lambda: len(self.delivered(accepted)) >= len(accepted) and self.outbox_pending() == 0,
                timeout=self.config.drain_timeout * 2,
                interval=0.5,
                what="the e-mails",
            )
        except TimeoutError:
            pass
        time.sleep(2)  # a duplicate would arrive within this window
        after = self.watcher.cpu_snapshot()
        found = self.delivered(accepted)
        records = sent["records"]
        start, end = min(r[1] for r in records), max(r[1] + r[2] for r in records)
        created = self.sql("SELECT count(*) FROM outbox_outboxmessage")[0][0] - created_before

        def counted(process: ManagedProcess, pattern: str, field: str | None) -> int:
            with process.log_path.open("rb") as handle:
                handle.seek(logs[process.name])
                lines = handle.read().decode(errors="replace").splitlines()
            total = 0
            for line in lines:
                if pattern in line:
                    try:
                        total += json.loads(line)[field] if field else 1
                    except (ValueError, KeyError):
                        continue
            return total

        published = {p.name: counted(p, '"relay.published"', "count") for p in self.relays}
        sent_by = {p.name: counted(p, '"notification.sent"', None) for p in workers}
        return {
            "accepted": len(accepted),
            "accepted_per_s": len(accepted) / (end - start),
            "delivered": len(found),
            "missing": len(accepted) - len(found),
            "duplicates": self.duplicates(accepted),
            "emails_per_s": len(found) / (max(found.values()) - start) if found else 0.0,
            "outbox_rows_created": created,
            "published_by_relay": published,
            "published_total": sum(published.values()),
            "sent_by_worker": sent_by,
            "cpu_cores": cpu_usage(before, after),
            # Hardly moves with other people's load, unlike the rates: what a webhook costs end to end.
            "cpu_ms_per_webhook": cpu_ms_per(
                before, after, len(accepted), ("web", "relay", "worker", "postgres", "rabbitmq")
            ),
        }

    # --- the run --------------------------------------------------------------------------

    def run(self, phases: list[str]) -> dict[str, Any]:
        self.setup()
        for name in phases:
            started = time.time()
            try:
                self.phases[name] = getattr(self, f"phase_{name}")()
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


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in (
        "Django",
        "djangorestframework",
        "dramatiq",
        "django-dramatiq",
        "pika",
        "psycopg",
        "gunicorn",
        "aiosmtpd",
    ):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "?"
    try:
        with psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=postgres") as conn:
            found["PostgreSQL"] = conn.execute("SHOW server_version").fetchone()[0].split()[0]
    except psycopg.Error:
        found["PostgreSQL"] = "?"
    try:
        connection = pika.BlockingConnection(pika.URLParameters("amqp://guest:guest@127.0.0.1:5672/%2F"))
        version = connection._impl.server_properties.get("version", "?")
        found["RabbitMQ"] = version.decode() if isinstance(version, bytes) else str(version)
        connection.close()
    except Exception:  # noqa: BLE001 - a version is nice to have
        found["RabbitMQ"] = "?"
    pgbench = subprocess.run(["pgbench", "--version"], capture_output=True, text=True).stdout
    found["pgbench"] = (re.findall(r"\) (\S+)", pgbench) or ["?"])[0]
    found["kernel"] = platform.release()
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return re.sub(r"\s+", " ", line.split(":", 1)[1].strip())
    except OSError:
        pass
    return platform.processor() or "?"


def run_several(runs: int) -> int:
    """`--runs N`: N complete runs one after the other, as separate processes, then the medians."""
    argv = []
    skip = False
    for arg in sys.argv[1:]:  # the same arguments, but --runs and --json-out
        if skip:
            skip = False
        elif arg in ("--runs", "--json-out"):
            skip = True
        elif not arg.startswith(("--runs=", "--json-out=")):
            argv.append(arg)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    reports, failed = [], 0
    for n in range(1, runs + 1):
        out = RESULTS_DIR / f"bench-{stamp}-run{n}.json"
        print(f"=== run {n} of {runs} ({out.name})", flush=True)
        failed += subprocess.run([sys.executable, __file__, *argv, "--json-out", str(out)], cwd=ROOT).returncode != 0
        if out.exists():
            reports.append(json.loads(out.read_text()))
    if not reports:
        return 1
    medians = report.median_report(reports)
    out = RESULTS_DIR / f"bench-{stamp}-medians.json"
    out.write_text(json.dumps({**medians, "metas": [r["meta"] for r in reports]}, indent=2, default=str))
    print("\n" + report.render_medians(medians, [r["meta"] for r in reports]))
    print(f"\nmedians: {out}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny configuration, a few seconds per phase")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument("--json-out", help="report path (default bench/results/bench-<time>.json)")
    parser.add_argument("--db-name", help="database to create and drop (default bench_<time>_<random>)")
    parser.add_argument("--vhost", help="RabbitMQ vhost to create and delete (default as the database)")
    parser.add_argument(
        "--web-workers", type=int, help="gunicorn workers (WEB_CONCURRENCY; default: the project's gunicorn.conf.py)"
    )
    parser.add_argument(
        "--worker-processes", type=int, help="rundramatiq --processes (default: rundramatiq's own, one per core)"
    )
    parser.add_argument("--worker-threads", type=int, default=8, help="rundramatiq --threads (rundramatiq's default)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy (CPU samples) the gunicorn workers during an extra 16-client ingest run and the "
        "Dramatiq worker processes while they apply and send in the workers phase",
    )
    parser.add_argument(
        "--profile-dir", help="with --profile: where the collapsed stacks go (default bench/results/profile-<run>/)"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs (path printed)")
    parser.add_argument(
        "--scale-out",
        action="store_true",
        help="only the scale-out steps: 1 relay + 1 worker group, then 2 relays, 2 worker groups "
        "and more web workers, under the same load (what each adds; nothing doubled)",
    )
    parser.add_argument(
        "--web-server",
        choices=("gunicorn", "granian"),
        default="gunicorn",
        help="gunicorn (the Procfile's) or granian (pip install granian; to compare)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=1,
        help="run everything this many times, each in its own database and vhost, and print the "
        "medians (make bench: 3)",
    )
    args = parser.parse_args()
    if args.runs > 1:
        return run_several(args.runs)
    phases = ["scaleout"] if args.scale_out else [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = set(phases) - set(PHASES) - {"scaleout"}
    if unknown:
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")

    def on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    config = Config.build(args)
    bench = Bench(config, args)
    started_at = dt.datetime.now(dt.UTC)
    try:
        bench.run(phases)
    except (PhaseFailed, TimeoutError) as error:
        bench.errors.append(str(error))
        bench.log(f"FAILED: {error}")
    except Exception:
        bench.errors.append(traceback.format_exc())
        raise
    finally:
        bench.teardown()

    meta = {
        "started_at": started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": time.time() - bench.started,
        "quick": config.quick,
        "phases": phases,
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "load_average_at_end": os.getloadavg(),
        "versions": versions(),
        "config": asdict(config),
        "database": bench.db_name,
        "vhost": bench.vhost,
        "web_workers": bench.web_workers,
    }
    figures = report.build_figures(bench.phases)
    full = {
        "meta": meta,
        "figures": figures,
        "targets": report.evaluate_targets(figures),
        "phases": bench.phases,
        "errors": bench.errors,
    }
    out = (
        Path(args.json_out)
        if args.json_out
        else (RESULTS_DIR / f"bench-{started_at.strftime('%Y%m%d-%H%M%S')}{'-quick' if config.quick else ''}.json")
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(full, indent=2, default=str))
    if "scaleout" in bench.phases:
        print(report.render_scaleout(full))
    else:
        print(report.render_table(full))
    print(f"\nreport: {out}")
    if bench.errors:
        print("\nerrors:\n" + "\n".join(bench.errors), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
