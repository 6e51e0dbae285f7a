"""Admin tooling commands and the embedded `make run` pipeline."""

from __future__ import annotations

import io
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from apps.webhooks.models import Portal, PortalSecret
from tests.support.polling import free_port, http_ok, stop_process
from tests.support.processes import ROOT, descendants, process_env, wait_until


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_create_portal_prints_a_secret_and_is_idempotent() -> None:
    first = run("create_portal", "pretix", "--name", "Pretix")
    secret = first.split("secret ")[1].strip()
    assert secret.startswith("whsec_") and "created portal pretix" in first
    again = run("create_portal", "pretix")
    assert "exists portal pretix" in again and secret in again
    assert run("create_portal", "pretix", "--secret", secret).count(secret) == 1
    assert PortalSecret.objects.count() == 1 and Portal.objects.get().name == "Pretix"


@pytest.mark.django_db
def test_create_portal_with_a_new_secret_adds_it_for_rotation() -> None:
    run("create_portal", "pretix")
    run("create_portal", "pretix", "--secret", "whsec_" + "c2Vjb25kLXNlY3JldC1rZXktYnl0ZXMtMDEyMzQ1Njc4OQ==")
    assert Portal.objects.get().secrets.filter(active=True).count() == 2


@pytest.mark.django_db
def test_create_portal_refuses_a_malformed_secret() -> None:
    with pytest.raises(CommandError):
        run("create_portal", "pretix", "--secret", "not-a-secret")


def embedded_env(tmp_path, **overrides: str) -> dict[str, str]:
    """What `make run` runs with on a fresh machine: no DATABASE_URL / BROKER_URL / EMAIL_URL / SMS_API_URL."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "BROKER_URL", "EMAIL_URL", "SMS_API_URL", "LOG_FORMAT", "PORT", "HOST")
    }
    env.update(
        DATA_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="eventplatform.settings.development",
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="INFO",
        **overrides,
    )
    return env


MANAGE = [sys.executable, "manage.py"]


def prepare(env: dict[str, str]) -> None:
    subprocess.run([*MANAGE, "migrate", "--no-input"], cwd=ROOT, env=env, check=True, capture_output=True)
    subprocess.run([*MANAGE, "create_portal", "demo"], cwd=ROOT, env=env, check=True, capture_output=True)


def start_pipeline(env: dict[str, str], log_path, *args: str) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [*MANAGE, "run_pipeline", *args], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_make_run_pipeline_works_embedded_without_postgres_or_rabbitmq(tmp_path) -> None:
    # Given no DATABASE_URL / BROKER_URL: SQLite + in-process broker + console e-mail and SMS, PORT from the
    # environment (as `make run PORT=...` exports it)
    port = free_port()
    env = embedded_env(tmp_path, PORT=str(port))
    prepare(env)
    log_path = tmp_path / "pipeline.log"
    pipeline = start_pipeline(env, log_path, "--scheduler-every", "0.5")
    url = f"http://127.0.0.1:{port}"
    try:
        first_line = wait_until(lambda: log_path.read_text().splitlines()[:1], timeout=30, what="first log line")
        assert "embedded_mode" in first_line[0], "the first log line says the embedded default is used"
        assert "embedded_default" in first_line[0] and "library_warning" not in first_line[0], "a code of ours"
        assert "sms" in first_line[0] and "console" in first_line[0], "it says which channels are live"
        assert "{" not in first_line[0][:1], "console log format in development"
        # Then, once the server answers, the next steps are printed with the chosen port in every URL
        box = wait_until(
            lambda: "send_test_webhook demo" in log_path.read_text() and log_path.read_text(),
            timeout=30,
            what="the next-steps box",
        )
        assert http_ok(f"{url}/healthz")
        assert http_ok(f"{url}/static/admin/css/base.css"), "the admin's static files are served"
        steps = box[box.index("=" * 78) :]
        assert f"--url {url}" in steps and f"{url}/admin/" in steps and f"{url}/admin/status/" in steps
        assert "createsuperuser" in steps, "no superuser exists yet"
        assert ":8000" not in box
        assert box.index("pipeline.listening") < box.index("=" * 78), "printed after the server started"

        def send() -> str:
            result = subprocess.run(
                [
                    *MANAGE,
                    "send_test_webhook",
                    "demo",
                    "--url",
                    url,
                    "--email",
                    "newcomer@example.org",
                    "--phone",
                    "+4915112345678",
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
            )
            return result.stdout if result.stdout.startswith("202") else ""

        wait_until(send, timeout=30, what="the webhook to be accepted")
        # Then the confirmation is "sent" to the console e-mail backend, and the SMS to the console SMS
        output = wait_until(
            lambda: "SMS To: +4915112345678" in log_path.read_text()
            and "X-Eventplatform-Notification-Id" in log_path.read_text()
            and log_path.read_text(),
            timeout=30,
            what="the e-mail and the SMS on the console",
        )
        assert "To: newcomer@example.org" in output
        # And the scheduler runs in the same process (its first round starts at once: heartbeats written)
        database = sqlite3.connect(tmp_path / "eventplatform.sqlite3")
        wait_until(
            lambda: database.execute("SELECT count(*) FROM notifications_schedulerheartbeat").fetchone()[0],
            timeout=30,
            what="a scheduler round",
        )
        database.close()
        # And idle it is quiet: a round every 0.5 s (4 jobs each, 160 job runs in 20 s) writes no line;
        # "a handful per idle minute" scaled to 20 s is at most one line.
        time.sleep(2)  # what the webhook set off has finished
        before = log_path.read_text().splitlines()
        time.sleep(20)
        idle_lines = log_path.read_text().splitlines()[len(before) :]
        assert len(idle_lines) <= 1, idle_lines
    finally:
        stop_process(pipeline, 20)


@pytest.mark.slow
def test_a_busy_port_stops_run_pipeline_at_once_naming_the_port(tmp_path) -> None:
    env = embedded_env(tmp_path)
    prepare(env)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        result = subprocess.run(
            [*MANAGE, "run_pipeline", "--bind", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"Port {port}" in result.stderr and "already in use" in result.stderr
    assert time.monotonic() - started < 15
    output = result.stdout + result.stderr
    for started_line in ("relay.started", "scheduler.started", "Worker", "embedded_mode"):
        assert started_line not in output, f"nothing starts before the bind: {started_line}"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_busy_port_stops_run_pipeline_with_postgres_and_rabbitmq_before_any_child_starts(tmp_path) -> None:
    env = process_env(
        BROKER_URL=os.environ["BROKER_URL"],
        RELAY_METRICS_PORT=str(free_port()),
        dramatiq_prom_port=str(free_port()),
        SCHEDULER_METRICS_PORT=str(free_port()),
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        log_path = tmp_path / "pipeline.log"
        pipeline = start_pipeline(env, log_path, "--bind", f"127.0.0.1:{port}")
        try:
            children: set[int] = set()
            deadline = time.monotonic() + 15
            while pipeline.poll() is None and time.monotonic() < deadline:
                children |= set(descendants(pipeline.pid))
                time.sleep(0.05)
            assert pipeline.poll() not in (None, 0), "it stops at once, with an error"
        finally:
            stop_process(pipeline, 10)
    output = log_path.read_text()
    assert f"Port {port}" in output and "already in use" in output
    assert not children, "no gunicorn, relay, worker or scheduler was started"
    assert "relay.started" not in output and "scheduler.started" not in output


@pytest.mark.slow
def test_make_run_passes_port_and_host_to_run_pipeline() -> None:
    def dry_run(*args: str, **env: str) -> str:
        environment = {k: v for k, v in os.environ.items() if k not in ("PORT", "HOST")}
        return subprocess.run(
            ["make", "-n", "run", *args],
            cwd=ROOT,
            env={**environment, **env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    assert "run_pipeline --bind 127.0.0.1:8000" in dry_run()
    assert "run_pipeline --bind 127.0.0.1:8001" in dry_run("PORT=8001")
    assert "run_pipeline --bind 0.0.0.0:8123" in dry_run(PORT="8123", HOST="0.0.0.0")


@pytest.mark.slow
def test_sigterm_stops_the_embedded_pipeline_like_ctrl_c(tmp_path) -> None:
    port = free_port()
    env = embedded_env(tmp_path)
    prepare(env)
    log_path = tmp_path / "pipeline.log"
    pipeline = start_pipeline(env, log_path, "--bind", f"127.0.0.1:{port}")
    try:
        wait_until(lambda: "send_test_webhook demo" in log_path.read_text(), timeout=30, what="the pipeline")
        pipeline.send_signal(signal.SIGTERM)
        assert pipeline.wait(timeout=10) == 0
        output = log_path.read_text()
        assert "relay.stopped" in output and "scheduler.stopped" in output and "pipeline.stopped" in output
        assert not http_ok(f"http://127.0.0.1:{port}/healthz")
    finally:
        stop_process(pipeline, 10)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sigterm_stops_every_child_of_the_pipeline_within_seconds(tmp_path) -> None:
    # Given run_pipeline with PostgreSQL and RabbitMQ: gunicorn, relay, worker, scheduler as children
    port = free_port()
    env = process_env(
        BROKER_URL=os.environ["BROKER_URL"],
        RELAY_METRICS_PORT=str(free_port()),
        dramatiq_prom_port=str(free_port()),
        SCHEDULER_METRICS_PORT=str(free_port()),
    )
    log_path = tmp_path / "pipeline.log"
    pipeline = start_pipeline(env, log_path, "--bind", f"127.0.0.1:{port}")
    try:
        wait_until(lambda: "send_test_webhook" in log_path.read_text(), timeout=60, what="the pipeline")
        children = wait_until(
            lambda: (found := descendants(pipeline.pid)) and len(found) >= 6 and found,
            timeout=30,
            what="gunicorn's workers and the worker's processes",
        )
        pipeline.send_signal(signal.SIGTERM)
        assert pipeline.wait(timeout=15) == 0
        wait_until(lambda: not any(alive(pid) for pid in children), timeout=5, what="every child gone")
    finally:
        stop_process(pipeline, 10)


@pytest.mark.django_db
def test_next_steps_hint_at_createsuperuser_only_while_there_is_no_superuser() -> None:
    from django.contrib.auth import get_user_model

    from apps.support.management.commands.run_pipeline import next_steps

    run("create_portal", "demo")
    assert "createsuperuser" in next_steps("http://127.0.0.1:8001")
    get_user_model().objects.create_superuser("admin", "admin@example.org", "pw-for-tests-1")
    steps = next_steps("http://127.0.0.1:8001")
    assert "createsuperuser" not in steps and "send_test_webhook demo --url http://127.0.0.1:8001" in steps


@pytest.mark.django_db
@pytest.mark.parametrize(("sms_console", "sms_api_url", "shows_phone"), [(True, "", True), (False, "", False)])
def test_the_printed_sample_command_sends_a_phone_when_sms_is_live(
    sms_console: bool, sms_api_url: str, shows_phone: bool
) -> None:
    """A newcomer runs the printed command as it is: with SMS printed on the console (the embedded
    default) it must produce the SMS too, not only the e-mail."""
    from apps.support.management.commands.run_pipeline import next_steps

    run("create_portal", "demo")
    with override_settings(SMS_CONSOLE=sms_console, SMS_API_URL=sms_api_url):
        steps = next_steps("http://127.0.0.1:8001")
    command = next(line for line in steps.splitlines() if "send_test_webhook" in line)
    assert ("--phone +4915112345678" in command) is shows_phone
