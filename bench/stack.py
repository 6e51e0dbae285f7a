"""The benchmark's plumbing: a throw-away database and vhost, and a watcher that records the peak
RSS and CPU time from /proc of each process started (by tests/support/processes.py's
ManagedProcess, the tests' own).

Every process is stopped by its own PID (SIGTERM, then SIGKILL), never by a name pattern: other
engineers' runs and test suites use the same commands on this machine. Nothing here imports
Django: the harness talks SQL and AMQP directly, so its own work stays small and visible.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.support.polling import free_port, http_ok, wait_until  # noqa: F401 - re-exported
from tests.support.processes import ManagedProcess

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
PG_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --- PostgreSQL database and RabbitMQ vhost ---------------------------------------------------


def rabbitmqctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120, check=check)


def _ident(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]+", name):
        raise ValueError(f"unsafe name {name!r}")
    return name


def database_create(name: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{_ident(name)}"')


def database_drop(name: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{_ident(name)}" WITH (FORCE)')


def database_exists(name: str) -> bool:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def vhost_create(name: str) -> None:
    rabbitmqctl("add_vhost", _ident(name))
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")


def vhost_delete(name: str) -> None:
    rabbitmqctl("delete_vhost", _ident(name), check=False)


def vhost_exists(name: str) -> bool:
    return name in rabbitmqctl("list_vhosts", "name", check=False).stdout.split()


# --- processes ----------------------------------------------------------------------------------


@dataclass
class ProcStat:
    kind: str
    role: str  # "root" (the process we started) or "child" (forked by it: gunicorn/dramatiq workers)
    hwm_kb: int = 0
    cpu_ticks: int = 0


@dataclass
class Watcher:
    """Polls /proc every `interval`: the peak RSS (VmHWM) of every process we started and of its
    children, and the CPU ticks of every process on the machine, sorted into our kinds,
    `postgres` (this run's backends and the server's own processes), `rabbitmq`, and `other`
    (anything else: other people's runs on a shared machine, their database sessions included).
    Nothing here ever signals a process."""

    database: str = ""
    interval: float = 0.5
    roots: dict[int, str] = field(default_factory=dict)
    stats: dict[int, ProcStat] = field(default_factory=dict)
    ticks: dict[int, tuple[str, int]] = field(default_factory=dict)  # every pid seen -> (class, max ticks)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def watch(self, process: ManagedProcess) -> ManagedProcess:
        with self._lock:
            self.roots[process.pid] = process.kind
        self.poll()
        return process

    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.poll()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a vanished /proc entry must not end the watcher
                pass

    @staticmethod
    def _stat(pid: int) -> tuple[str, int, int] | None:
        """(comm, ppid, utime+stime ticks) of a live process."""
        try:
            raw = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        return comm, int(fields[1]), int(fields[11]) + int(fields[12])

    @staticmethod
    def _hwm_kb(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _classify(self, pid: int, comm: str) -> str:
        if comm == "postgres":
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                return "postgres"
            # A backend's title names its database: "postgres: 15/main: user dbname host(port) state".
            backend = re.match(r"postgres: \S+: (\S+) (\S+) ", title)
            if backend and backend.group(2) != self.database and "(" in title:
                return "other"
            return "postgres"
        if comm.startswith(("beam", "erl_child", "epmd", "inet_gethost")):
            return "rabbitmq"
        return "other"

    def poll(self) -> None:
        table: dict[int, tuple[str, int, int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = self._stat(int(entry))
                if stat:
                    table[int(entry)] = stat
        children: dict[int, list[int]] = defaultdict(list)
        for pid, (_, ppid, _) in table.items():
            children[ppid].append(pid)
        with self._lock:
            ours: dict[int, str] = {os.getpid(): "harness"}
            for root, kind in self.roots.items():
                stack = [(root, "root")]
                while stack:
                    pid, role = stack.pop()
                    if pid not in table:
                        continue
                    ours[pid] = kind
                    record = self.stats.setdefault(pid, ProcStat(kind=kind, role=role))
                    record.hwm_kb = max(record.hwm_kb, self._hwm_kb(pid))
                    record.cpu_ticks = max(record.cpu_ticks, table[pid][2])
                    stack.extend((child, "child") for child in children.get(pid, []))
            for pid, (comm, _, ticks) in table.items():
                known = self.ticks.get(pid)
                if known is None or (pid in ours and known[0] != ours[pid]):
                    known = (ours.get(pid) or self._classify(pid, comm), 0)
                self.ticks[pid] = (known[0], max(known[1], ticks))

    def peak_mb(self, kind: str, role: str) -> float:
        with self._lock:
            values = [s.hwm_kb for s in self.stats.values() if s.kind == kind and s.role == role]
        return round(max(values) / 1024, 1) if values else 0.0

    def cpu_snapshot(self) -> dict[int, tuple[str, int]]:
        """CPU ticks so far of every process seen, plus the machine's busy time (pid -1) and a clock (pid -2)."""
        self.poll()
        cpu = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        busy = sum(cpu[:8]) - cpu[3] - cpu[4]
        with self._lock:
            snapshot = dict(self.ticks)
        snapshot[-1] = ("machine_busy", busy)
        snapshot[-2] = ("wall", int(time.monotonic() * CLOCK_TICKS))
        return snapshot


def cpu_seconds(before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]]) -> dict[str, float]:
    """CPU seconds used per class between two snapshots; `unattributed` is the machine's busy time
    no process accounts for (interrupts, kernel threads, processes too short-lived to see)."""
    used: dict[str, float] = defaultdict(float)
    for pid, (kind, ticks) in after.items():
        if pid < 0:
            continue
        previous = before.get(pid)
        used[kind] += (ticks - (previous[1] if previous and previous[0] == kind else 0)) / CLOCK_TICKS
    machine = (after[-1][1] - before[-1][1]) / CLOCK_TICKS
    used["unattributed"] = max(0.0, machine - sum(used.values()))
    used["machine_busy"] = machine
    used["wall"] = (after[-2][1] - before[-2][1]) / CLOCK_TICKS
    return dict(used)


def cpu_usage(before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]]) -> dict[str, float]:
    """Average cores used per class between two snapshots (see cpu_seconds)."""
    seconds = cpu_seconds(before, after)
    wall = seconds.pop("wall")
    if wall <= 0:
        return {}
    return {kind: round(used / wall, 2) for kind, used in sorted(seconds.items()) if used / wall >= 0.005}


def cpu_ms_per(
    before: dict[int, tuple[str, int]], after: dict[int, tuple[str, int]], items: int, kinds: tuple[str, ...]
) -> dict[str, float]:
    """CPU milliseconds per item (request, message, e-mail) of the given classes: unlike a rate,
    this hardly moves when other people's work shares the machine."""
    seconds = cpu_seconds(before, after)
    return {kind: round(seconds.get(kind, 0.0) * 1000 / items, 3) for kind in kinds} if items else {}
