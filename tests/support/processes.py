"""Starting and stopping the real processes (gunicorn, run_relay, rundramatiq), for the end-to-end
tests and the benchmark alike: one class, ManagedProcess, and each command line taken from the
Procfile (eventplatform/procfile.py), with the options a test adds.

Every process is stopped by its own PID (SIGTERM, then SIGKILL), never by a name pattern: other
runs on this machine may be running the same commands.
"""

from __future__ import annotations

import collections
import os
import smtplib
import subprocess
import tempfile
from pathlib import Path

from eventplatform.procfile import procfile_command
from tests.support.polling import free_port, http_ok, stop_process, wait_until

ROOT = Path(__file__).resolve().parents[2]


def process_env(**overrides: str) -> dict[str, str]:
    """The environment of a child: this run's test database and RabbitMQ vhost."""
    from django.db import connection  # here, not at the top: the bench imports this module without Django

    settings_dict = connection.settings_dict
    database_url = (
        f"postgres://{settings_dict['USER'] or 'postgres'}@{settings_dict['HOST'] or '127.0.0.1'}:"
        f"{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"
    )
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="eventplatform.settings.test",
        DATABASE_URL=database_url,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


# 50+ characters, not Django's insecure prefix: what `check --deploy` accepts.
PRODUCTION_SECRET_KEY = "k3y-for-tests-of-production-settings-0123456789-abcdefghijklmnopqrstuvwxyz"


def production_env(**overrides: str) -> dict[str, str]:
    """The environment of a child started as an operator starts it: no settings module chosen
    (so production settings), every variable production requires set, this run's database/vhost."""
    env = process_env(
        SECRET_KEY=PRODUCTION_SECRET_KEY,
        BROKER_URL=os.environ["BROKER_URL"],
        EMAIL_URL="smtp://127.0.0.1:2525",
        ALLOWED_HOSTS="127.0.0.1,testserver",
    )
    for name in ("DJANGO_SETTINGS_MODULE", "SENTRY_DSN"):
        env.pop(name, None)
    env.update(overrides)
    return env


def descendants(pid: int) -> list[int]:
    """PIDs of the process's children, grandchildren, ... (rundramatiq forks its worker processes)."""
    parents: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents[ppid].append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


class ManagedProcess:
    """One child (its own children included) started in the project's directory, its output in a
    log file: a fresh temporary file, or `<log_dir>/<name>.log` (the bench keeps its run's logs
    together). `kind` groups processes in the bench's CPU and memory figures (default: the name)."""

    def __init__(
        self, name: str, args: list[str], env: dict[str, str], *, kind: str | None = None, log_dir: Path | None = None
    ) -> None:
        self.name, self.kind, self.args = name, kind or name, args
        if log_dir is None:
            self.log_path = Path(tempfile.mkstemp(prefix=f"ep-{name}-", suffix=".log")[1])
        else:
            self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def output(self, tail: int | None = None) -> str:
        """What it wrote so far (the last `tail` characters of it); readable after stop() too."""
        if not self._log.closed:
            self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def log_contains(self, text: str) -> bool:
        return text in self.output()

    def stop(self, timeout: float = 20) -> None:
        stop_process(self.process, timeout)
        if not self._log.closed:
            self._log.close()

    def kill(self) -> None:
        """SIGKILL: the crash a supervisor would see."""
        self.process.kill()
        self.process.wait(timeout=10)


def start_web(env: dict[str, str], *, workers: int = 2) -> tuple[ManagedProcess, str]:
    """The Procfile's web process on a free loopback port, `workers` gunicorn workers."""
    port = free_port()
    command = procfile_command(
        "web",
        environ={**env, "HOST": "127.0.0.1", "PORT": str(port)},
        options={"--workers": str(workers), "--graceful-timeout": "5"},
    )
    web = ManagedProcess("web", command, env)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{base_url}/healthz") or not web.alive(), timeout=30, what="gunicorn")
    finally:
        if not web.alive():
            raise AssertionError(f"gunicorn exited:\n{web.output()}")
    return web, base_url


def start_relay(env: dict[str, str]) -> ManagedProcess:
    """The Procfile's relay, polling every second."""
    return ManagedProcess("relay", procfile_command("relay", environ=env, options={"--poll-seconds": "1"}), env)


def start_worker(env: dict[str, str], *, processes: int = 1, threads: int = 4) -> ManagedProcess:
    """The Procfile's worker with `processes` x `threads`."""
    command = procfile_command(
        "worker", environ=env, options={"--processes": str(processes), "--threads": str(threads)}
    )
    return ManagedProcess("worker", command, env)


def start_bounce_receiver(
    env: dict[str, str], *, max_bytes: int = 10 * 1024 * 1024, threads: int = 8
) -> tuple[ManagedProcess, int]:
    """The Procfile's bounce receiver on a free port, waited for until it greets; returns it and its
    SMTP port. `env` must set EMAIL_BOUNCE_ADDRESS (and the SECRET_KEY the tokens were made with);
    BOUNCE_METRICS_PORT in it is the exporter's port ("0": none), else a free one."""
    port = free_port()
    options = {
        "--bind": f"127.0.0.1:{port}",
        "--max-bytes": str(max_bytes),
        "--metrics-port": env.get("BOUNCE_METRICS_PORT") or str(free_port()),
        "--threads": str(threads),
    }
    receiver = ManagedProcess("bounces", procfile_command("bounces", environ=env, options=options), env)
    try:
        wait_until(lambda: smtp_greets(port) or not receiver.alive(), timeout=30, what="run_bounce_receiver")
    finally:
        if not receiver.alive():
            raise AssertionError(f"run_bounce_receiver exited:\n{receiver.output()}")
    return receiver, port


def smtp_greets(port: int) -> bool:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=2) as smtp:
            return smtp.noop()[0] == 250
    except (OSError, smtplib.SMTPException):
        return False
