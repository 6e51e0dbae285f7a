"""The status page in embedded mode (`make run` with nothing set): SQLite and the in-process broker.

Its own process, because the suite's settings are PostgreSQL and RabbitMQ and are read at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

CHECK = """
import datetime as dt
from django.test.utils import setup_test_environment
setup_test_environment()
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from apps.notifications.models import Notification, NotificationAttempt
from apps.registrations.models import Registration
from apps.webhooks.services import portal_create
from tests.registrations.factories import RegistrationFactory
from tests.notifications.factories import NotificationAttemptFactory, NotificationFactory
portal, _, _ = portal_create(slug="demo", name="Demo")
registration = RegistrationFactory(portal=portal, external_id="R-1", email="ada@example.org")
notification = NotificationFactory(registration=registration, kind="confirmation", channel="email",
    recipient="ada@example.org", context={}, status="dead", last_error_code="smtp_permanent")
for number, outcome in enumerate(["permanent_error", "sent", "sent"], start=1):
    NotificationAttemptFactory(notification=notification, number=number, duration_ms=3, outcome=outcome,
        started_at=timezone.now() - dt.timedelta(minutes=10 * number))
client = Client()
client.force_login(User.objects.create_superuser("support", "support@example.org", "pw"))
response = client.get("/admin/status/")
status = response.context["status"]
print("status", response.status_code, status.broker.kind)
print("chart", sum(b.sent for b in status.chart), sum(b.failed for b in status.chart), len(status.chart))
print("dead", [(f.label, f.count) for f in status.windows[0].dead_by_code])
print("search", client.get("/admin/notifications/notification/?q=ada@exa").context["cl"].result_count)
"""


def test_status_page_works_on_sqlite_with_the_in_process_broker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}
    env.update(DATA_DIR=str(tmp_path), LOG_LEVEL="WARNING", DJANGO_SETTINGS_MODULE="eventplatform.settings.base")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300)
    result = subprocess.run(
        [*manage, "shell", "-c", CHECK], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-4000:]
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert lines["status"] == "200 embedded broker"
    assert lines["chart"] == "2 1 288"
    assert lines["dead"] == "[('smtp_permanent', 1)]"
    assert lines["search"] == "1"  # icontains on SQLite: no trigram index there, and none needed
