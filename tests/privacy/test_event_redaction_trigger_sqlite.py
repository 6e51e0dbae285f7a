"""Embedded mode (SQLite): the same trigger rule, checked on the shape of the update alone."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.processes import ROOT

SCRIPT = """
import django, uuid
django.setup()
from django.core.management import call_command
from django.db import DatabaseError, connection
from django.utils import timezone
from apps.webhooks.models import Portal, WebhookEvent
from apps.webhooks.redaction import Redaction, webhook_events_redact
call_command("migrate", verbosity=0)
portal = Portal.objects.create(slug="p", name="p")
event = WebhookEvent.objects.create(portal=portal, delivery_id="d1", type="registration.created", status="accepted",
                                    raw_body=b'{"x": "ada@example.org"}', payload={"x": "ada@example.org"},
                                    received_at=timezone.now())
def refused(sql):
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, [event.id.hex])
    except DatabaseError:
        return True
    return False
print("type", refused("UPDATE webhooks_webhookevent SET type = 'x' WHERE id = %s"))
print("status", refused("UPDATE webhooks_webhookevent SET raw_body = X'', payload = '{\\"redacted\\": 1}', "
                        "status = 'rejected' WHERE id = %s"))
print("rewrite", refused("UPDATE webhooks_webhookevent SET raw_body = X'', payload = '{\\"x\\": 1}' WHERE id = %s"))
print("delete", refused("DELETE FROM webhooks_webhookevent WHERE id = %s"))
print("redacted", webhook_events_redact(redactions=[Redaction(event_id=event.id, payload={"redacted": "t"})]))
event.refresh_from_db()
print("after", bytes(event.raw_body), event.payload)
"""


def test_sqlite_allows_the_redaction_and_refuses_everything_else(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL")}
    env.update(DJANGO_SETTINGS_MODULE="eventplatform.settings.development", DATA_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert (lines["type"], lines["status"], lines["rewrite"], lines["delete"]) == ("True",) * 4
    assert lines["redacted"] == "1"
    assert lines["after"] == "b'' {'redacted': 't'}"
