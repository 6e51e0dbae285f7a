"""Structure the issue asked for, checked so it stays: one path to `dead`; channel rules live in
the notifications app and registrations reach them through one service."""

from __future__ import annotations

import inspect
from pathlib import Path

from apps.notifications import channels, failures
from apps.registrations import services as registration_services

APP = Path(failures.__file__).parent


def test_only_failures_py_marks_a_notification_dead() -> None:
    writers = sorted(path.name for path in APP.glob("*.py")
                     if "DEAD_LETTERS" in path.read_text() or '"notification.dead"' in path.read_text())
    assert writers == ["failures.py"]
    assert inspect.getsource(failures).count("status=Status.DEAD, last_error_code") == 1  # the one UPDATE


def test_registrations_hold_no_channel_rules() -> None:
    source = inspect.getsource(registration_services)
    assert "SMS_API_URL" not in source and "_channels" not in source
    assert "from apps.notifications.channels import channels_for" in (APP / "reminders.py").read_text()


def test_channels_follow_the_contract(settings) -> None:
    settings.SMS_API_URL = "http://sms.invalid"
    with_phone = {"email": "ada@example.org", "phone": "+4915112345678"}
    assert {kind: channels.channels_for(kind, with_phone) for kind in
            ("confirmation", "update", "cancellation", "reminder_24h", "reminder_1h")} == {
        "confirmation": ["email", "sms"], "update": ["email"], "cancellation": ["email", "sms"],
        "reminder_24h": ["email"], "reminder_1h": ["email", "sms"]}
    assert channels.channels_for("confirmation", {"phone": "+4915112345678"}) == ["sms"]
    settings.SMS_API_URL = ""
    assert channels.channels_for("confirmation", with_phone) == ["email"]
