"""A throw-away RabbitMQ cluster on loopback, beside (never touching) the shared node on 5672.

Each node has its own node name, AMQP port, Erlang distribution port, config file (this machine's
/etc/rabbitmq/rabbitmq.conf pins the listener to 5672, so each node gets its own
`listeners.tcp.local`), env file, mnesia and log directories and an empty enabled-plugins file, all
under one temporary directory. Nodes run as the `rabbitmq` user through the packaged wrapper, so
they share that user's Erlang cookie with `rabbitmqctl`. Every node is stopped by its own name
(`rabbitmqctl -n NODE stop`), then by its own process group if it does not go, and its files are
removed: `stop()` belongs in a `finally`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.polling import free_port

RABBITMQCTL_TIMEOUT = 120


def rabbitmqctl(
    node: str, *args: str, timeout: float = RABBITMQCTL_TIMEOUT, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", "-q", "-n", node, *args], capture_output=True, text=True, timeout=timeout, check=check
    )


@dataclass
class Node:
    name: str  # ep-test-a-1234@localhost
    port: int
    dist_port: int
    base: Path
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.base / "stdout.log"

    def url(self, vhost: str = "%2F") -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}"

    def start(self) -> None:
        for sub in ("mnesia", "log"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
            # Small machine, several nodes: no disk/memory alarms from the shared load.
            "disk_free_limit.absolute = 50MB\n"
            "vm_memory_high_watermark.relative = 0.8\n"
        )
        (self.base / "rabbitmq-env.conf").write_text("ERL_EPMD_ADDRESS=127.0.0.1\n")
        (self.base / "enabled_plugins").write_text("[].\n")
        env = dict(os.environ)
        env.update(
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_PID_FILE=str(self.base / "node.pid"),
            RABBITMQ_PLUGINS_EXPAND_DIR=str(self.base / "plugins-expand"),
            ERL_EPMD_ADDRESS="127.0.0.1",
        )
        subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(self.base)], check=True)
        with self.log.open("wb") as out:
            # Its own process group: the fallback stop signals exactly this node's processes.
            self.process = subprocess.Popen(
                ["rabbitmq-server"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_running(self, timeout: float = 90) -> None:
        rabbitmqctl(
            self.name, "wait", "--timeout", str(int(timeout)), str(self.base / "node.pid"), timeout=timeout + 30
        )
        rabbitmqctl(self.name, "await_startup", "--timeout", str(int(timeout)), timeout=timeout + 30)

    def stop(self) -> None:
        """Stop this node by its name, then by its own process group."""
        if self.process is None:
            return
        if self.process.poll() is None:
            rabbitmqctl(self.name, "stop", timeout=60, check=False)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # epmd may still list the name briefly; the beam process itself is gone.
        self.process = None

    def output(self) -> str:
        logs = sorted((self.base / "log").glob("*.log"))
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in [self.log, *logs] if p.exists())


class RabbitCluster:
    def __init__(self, size: int = 3) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="ep-rabbit-cluster-"))
        os.chmod(self.base, 0o755)
        suffix = f"{os.getpid()}-{self.base.name[-6:]}".replace("_", "")
        self.nodes = [
            Node(
                name=f"ep-test-{chr(ord('a') + i)}-{suffix}@localhost",
                port=free_port(),
                dist_port=free_port(),
                base=self.base / chr(ord("a") + i),
            )
            for i in range(size)
        ]

    def start(self) -> RabbitCluster:
        started = time.monotonic()
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_running()
        first = self.nodes[0]
        for node in self.nodes[1:]:
            rabbitmqctl(node.name, "stop_app")
            rabbitmqctl(node.name, "join_cluster", first.name)
            rabbitmqctl(node.name, "start_app")
        status = rabbitmqctl(first.name, "cluster_status", "--formatter", "json").stdout
        for node in self.nodes:
            assert node.name in status, status
        self.started_seconds = time.monotonic() - started
        return self

    def add_vhost(self, vhost: str) -> None:
        node = self.nodes[0].name
        rabbitmqctl(node, "add_vhost", vhost)
        rabbitmqctl(node, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def broker_url(self, vhost: str) -> str:
        """BROKER_URL naming every node, as an operator would set it."""
        return ",".join(node.url(vhost) for node in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            try:
                node.stop()
            except Exception:  # noqa: BLE001 - stop the others all the same
                if node.process is not None and node.process.poll() is None:
                    os.killpg(node.process.pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)
