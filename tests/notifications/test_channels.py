"""Which channels each notification kind goes out on (CONTRACT section 5). The layers between the
apps are checked by import-linter (tests/test_layers.py), no longer by reading source text."""

from __future__ import annotations

from apps.notifications import channels


def test_channels_follow_the_contract(settings) -> None:
    settings.SMS_API_URL = "http://sms.invalid"
    with_phone = {"email": "ada@example.org", "phone": "+4915112345678"}
    assert {
        kind: channels.channels_for(kind, with_phone)
        for kind in ("confirmation", "update", "cancellation", "reminder_24h", "reminder_1h")
    } == {
        "confirmation": ["email", "sms"],
        "update": ["email"],
        "cancellation": ["email", "sms"],
        "reminder_24h": ["email"],
        "reminder_1h": ["email", "sms"],
    }
    assert channels.channels_for("confirmation", {"phone": "+4915112345678"}) == ["sms"]
    settings.SMS_API_URL = ""
    assert channels.channels_for("confirmation", with_phone) == ["email"]
