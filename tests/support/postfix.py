"""A private Postfix instance for a test: Debian's postfix (deploy/install-tools.sh installs it; the
system's own instance is never started or touched), with its own config and queue directories
under a temporary directory, listening on a free loopback port.

Routing is by transport_maps, as an operator routes the bounce domain (docs/deploy.md): each
recipient domain goes to a local SMTP server of the test's (a mailbox server, the bounce
receiver), with no DNS. Postfix's own DSNs (success ones too: our next hop does not offer DSN, so
Postfix reports `relayed` itself when NOTIFY=SUCCESS was asked) go to the envelope sender, our
return path, and so reach the bounce receiver. Retries are seconds apart, not minutes, so a
deferred report is retried within a test.

Stopped by `postfix -c <dir> stop` and then, should its master outlive that, by the master's own
PID (from its pid file), never by a process name. Root is needed (the master starts as root and
drops to the `postfix` user, `postdrop` group: the package creates both).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.polling import free_port, wait_until

POSTFIX = "/usr/sbin/postfix"
# The services a relay-only instance needs; chroot off (column 5), since the queue directory holds
# none of the files a chroot needs.
MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""
MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {base}/queue
data_directory = {base}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.eventplatform.test
mydomain = eventplatform.test
myorigin = $myhostname
mydestination =
local_transport = error:5.1.1 no local delivery here
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtp_host_lookup = native
smtp_dns_support_level = disabled
notify_classes =
biff = no
maillog_file_prefixes = {base}
maillog_file = {base}/maillog
transport_maps = texthash:{base}/etc/transport
queue_run_delay = 1s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
"""


class PostfixNotInstalled(AssertionError):
    """Raised (a failure, not a skip) when Debian's postfix is not installed."""


class Postfix:
    """`Postfix(routes={"example.org": 2525, "bounces.example.com": 2526}).start()`: relays mail for
    each domain to 127.0.0.1:<port>; `port` is where it listens for our sending side."""

    def __init__(self, routes: dict[str, int]) -> None:
        if not os.access(POSTFIX, os.X_OK):
            raise PostfixNotInstalled(
                f"{POSTFIX} is missing: run `sudo bash deploy/install-tools.sh` (make test does) to install "
                "Debian's postfix package"
            )
        self.routes = routes
        self.port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix="ep-postfix-"))
        self.config_dir = self.base / "etc"

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), *args], capture_output=True, text=True, timeout=60, check=False
        )

    def start(self) -> Postfix:
        owner = pwd.getpwnam("postfix")
        self.base.chmod(0o755)  # the postfix user walks into its queue and data directories
        for name in ("etc", "queue", "data"):
            (self.base / name).mkdir()
        os.chown(self.base / "data", owner.pw_uid, owner.pw_gid)
        (self.config_dir / "main.cf").write_text(MAIN_CF.format(base=self.base))
        (self.config_dir / "master.cf").write_text(MASTER_CF.format(listen=f"127.0.0.1:{self.port}"))
        (self.config_dir / "transport").write_text(
            "".join(f"{domain} smtp:[127.0.0.1]:{port}\n" for domain, port in self.routes.items())
        )
        started = self._postfix("start")
        if started.returncode != 0:
            raise AssertionError(f"postfix start failed:\n{started.stdout}{started.stderr}\n{self.log()}")
        wait_until(self._listening, timeout=30, what="postfix to listen")
        return self

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def log(self) -> str:
        path = self.base / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def queue_ids(self) -> list[str]:
        """What is still in Postfix's queues (active, deferred, incoming), by queue file name."""
        return [
            path.name
            for name in ("incoming", "active", "deferred")
            for path in (self.base / "queue" / name).rglob("*")
            if path.is_file()
        ]

    def flush(self) -> None:
        """Retry deferred mail now (`postqueue -f`)."""
        subprocess.run(["/usr/sbin/postqueue", "-c", str(self.config_dir), "-f"], capture_output=True, timeout=30)

    def _master_pid(self) -> int | None:
        try:
            return int((self.base / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        pid = self._master_pid()
        self._postfix("stop")
        deadline = time.monotonic() + 20
        while pid and time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.2)
        if pid and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)  # this instance's own master, by its pid file
        shutil.rmtree(self.base, ignore_errors=True)
