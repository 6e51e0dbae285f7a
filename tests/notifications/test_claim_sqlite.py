"""Embedded mode (SQLite): the claim statement, with its staleness and suppression checks, runs there too."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.processes import ROOT

SCRIPT = """
import django
django.setup()
from django.core.management import call_command
from apps.webhooks.models import Portal
from apps.registrations.models import Registration
from apps.notifications.models import Notification
from apps.notifications.sending import notification_send
call_command("migrate", verbosity=0)
portal = Portal.objects.create(slug="p", name="p")
registration = Registration.objects.create(portal=portal, external_id="R1", email="a@example.org", first_name="A",
                                           last_name="B", event_name="E", event_starts_at="2030-01-01T00:00:00Z",
                                           event_timezone="UTC")
context = {"first_name": "A", "event_name": "E", "event_starts_at": "2030-01-01T00:00:00+00:00",
           "event_timezone": "UTC", "locale": "en", "role": "attendee"}
def send(kind):
    notification = Notification.objects.create(registration=registration, kind=kind, channel="email",
                                               recipient="a@example.org", context=context)
    outcome = notification_send(notification_id=str(notification.id)).outcome
    notification.refresh_from_db()
    print(kind, outcome, notification.status, notification.last_error_code or "-", notification.attempts)
send("confirmation")
from apps.notifications.delivery import suppression_add
suppression_add(channel="email", address="A@Example.org", reason="manual")
send("reminder_24h")
Registration.objects.filter(id=registration.id).update(status="cancelled")
send("update")
from apps.notifications.sending import notification_stale_reason
print("replay check", notification_stale_reason(notification_id=Notification.objects.get(kind="confirmation").id))
"""


def test_the_claim_and_its_staleness_check_run_on_sqlite(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="eventplatform.settings.development",
        DATA_DIR=str(tmp_path),
        EMAIL_URL="memorymail://",
        LOG_LEVEL="WARNING",
    )
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-4:] == [
        "confirmation sent sent - 1",
        "reminder_24h suppressed suppressed address_suppressed 0",  # the suppression's EXISTS, on SQLite too
        "update cancelled cancelled registration_cancelled 0",
        "replay check registration_cancelled",  # the replay asks the claim's rule, on SQLite too
    ]
