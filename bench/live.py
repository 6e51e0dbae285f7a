"""A running stack for the small measurement scripts (outage_metrics, single_latency): a fresh
database and vhost, gunicorn, run_relay, rundramatiq and an SMTP sink, all stopped by PID and
cleaned up on exit."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.stack import (
    PYTHON,
    database_create,
    database_drop,
    free_port,
    http_ok,
    vhost_create,
    vhost_delete,
    wait_until,
)
from eventplatform.procfile import procfile_command
from tests.support.processes import ManagedProcess
from tests.support.webhooks import SECRET


@dataclass
class LiveStack:
    base_url: str
    relay_metrics_url: str
    worker_metrics_url: str
    smtp_log: Path  # lines: received-at \t notification id \t recipient
    portal: str = "bench"
    secret: str = SECRET


@contextmanager
def live_stack(*, web_workers: int = 2, worker_processes: int = 1, worker_threads: int = 4) -> Iterator[LiveStack]:
    name = f"live_{uuid.uuid4().hex[:8]}"
    log_dir = Path(tempfile.mkdtemp(prefix="ep-live-"))
    ports = {kind: free_port() for kind in ("web", "relay", "workers", "smtp")}
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="eventplatform.settings.development",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{name}",
        BROKER_URL=f"amqp://guest:guest@127.0.0.1:5672/{name}",
        EMAIL_URL=f"smtp://127.0.0.1:{ports['smtp']}",
        RELAY_METRICS_PORT=str(ports["relay"]),
        dramatiq_prom_port=str(ports["workers"]),
        LOG_LEVEL="WARNING",
    )
    processes: list[ManagedProcess] = []
    database_create(name)
    vhost_create(name)
    try:
        subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], env=env, check=True)
        subprocess.run(
            [PYTHON, "manage.py", "create_portal", "bench", "--secret", SECRET],
            env=env,
            check=True,
            capture_output=True,
        )
        processes += [
            ManagedProcess(
                "smtp",
                [PYTHON, "-m", "bench.smtp_sink", "--port", str(ports["smtp"]), "--out", str(log_dir / "smtp.tsv")],
                env,
                log_dir=log_dir,
            ),
            ManagedProcess(
                "web",
                procfile_command(
                    "web",
                    environ={**env, "HOST": "127.0.0.1", "PORT": str(ports["web"])},
                    options={"--workers": str(web_workers)},
                ),
                env,
                log_dir=log_dir,
            ),
            ManagedProcess("relay", procfile_command("relay", environ=env), env, log_dir=log_dir),
            ManagedProcess(
                "worker",
                procfile_command(
                    "worker",
                    environ=env,
                    options={"--processes": str(worker_processes), "--threads": str(worker_threads)},
                ),
                env,
                log_dir=log_dir,
            ),
        ]
        stack = LiveStack(
            base_url=f"http://127.0.0.1:{ports['web']}",
            relay_metrics_url=f"http://127.0.0.1:{ports['relay']}/",
            worker_metrics_url=f"http://127.0.0.1:{ports['workers']}/",
            smtp_log=log_dir / "smtp.tsv",
        )
        wait_until(lambda: http_ok(f"{stack.base_url}/healthz"), timeout=60, what="web")
        wait_until(
            lambda: http_ok(stack.relay_metrics_url) and http_ok(stack.worker_metrics_url),
            timeout=60,
            what="the relay's and workers' exporters",
        )
        yield stack
    finally:
        for process in processes:
            process.stop(timeout=30)
        vhost_delete(name)
        database_drop(name)
