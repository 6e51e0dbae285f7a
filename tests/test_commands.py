"""Admin tooling commands and the embedded `make run` pipeline."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from apps.webhooks.models import Portal, PortalSecret
from tests.support.polling import free_port
from tests.support.processes import ROOT, wait_until


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


@pytest.mark.slow
def test_make_run_pipeline_works_embedded_without_postgres_or_rabbitmq(tmp_path) -> None:
    # Given no DATABASE_URL / BROKER_URL: SQLite + in-process broker + console e-mail
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "EMAIL_URL")}
    env.update(DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="eventplatform.settings.development",
               PYTHONUNBUFFERED="1", LOG_LEVEL="INFO")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--no-input"], cwd=ROOT, env=env, check=True, capture_output=True)
    subprocess.run([*manage, "create_portal", "demo"], cwd=ROOT, env=env, check=True, capture_output=True)
    port = free_port()
    log_path = tmp_path / "pipeline.log"
    with log_path.open("wb") as log:
        pipeline = subprocess.Popen([*manage, "run_pipeline", "--bind", f"127.0.0.1:{port}"], cwd=ROOT, env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
    try:
        first_line = wait_until(lambda: log_path.read_text().splitlines()[:1], timeout=30, what="first log line")
        assert "embedded_mode" in first_line[0], "the first log line says the embedded default is used"

        def send() -> str:
            result = subprocess.run([*manage, "send_test_webhook", "demo", "--url", f"http://127.0.0.1:{port}",
                                     "--email", "newcomer@example.org"], cwd=ROOT, env=env, capture_output=True,
                                    text=True)
            return result.stdout if result.stdout.startswith("202") else ""

        wait_until(send, timeout=30, what="the webhook to be accepted")
        # Then the confirmation is "sent" to the console e-mail backend
        output = wait_until(lambda: "X-Eventplatform-Notification-Id" in log_path.read_text() and log_path.read_text(),
                            timeout=30, what="the e-mail on the console")
        assert "To: newcomer@example.org" in output
        # And the scheduler runs in the same process (its first round starts at once)
        wait_until(lambda: "scheduler.job_ran" in log_path.read_text(), timeout=30, what="a scheduler round")
    finally:
        pipeline.terminate()
        pipeline.wait(timeout=20)
