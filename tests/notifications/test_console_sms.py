"""The embedded default prints SMS on the console, as it does e-mail (issue 21): a newcomer's
`send_test_webhook --phone` shows an SMS. A real SMS_API_URL always wins."""

from __future__ import annotations

import io

import pytest

from apps.notifications import channels
from apps.notifications import channels as providers
from apps.notifications.channels.sms.console import ConsoleSmsProvider
from apps.notifications.channels.sms.twilio import TwilioSmsProvider
from apps.notifications.providers import OutgoingMessage

WITH_PHONE = {"email": "ada@example.org", "phone": "+4915112345678"}


@pytest.fixture(autouse=True)
def fresh_providers():
    providers.reset_providers()
    yield
    providers.reset_providers()


def test_console_sms_takes_part_and_prints_the_message(settings) -> None:
    settings.SMS_API_URL, settings.SMS_CONSOLE = "", True
    assert channels.channels_for("confirmation", WITH_PHONE) == ["email", "sms"]
    provider = providers.providers_for("sms")[0]
    assert isinstance(provider, ConsoleSmsProvider)
    out = io.StringIO()
    message_id = ConsoleSmsProvider(out).send(
        OutgoingMessage(notification_id="n-1", recipient="+4915112345678", subject="", text="Ada, you are registered.")
    )
    assert message_id.startswith("console-")
    assert "SMS To: +4915112345678" in out.getvalue() and "Ada, you are registered." in out.getvalue()


def test_a_real_sms_api_wins_over_the_console(settings) -> None:
    settings.SMS_API_URL, settings.SMS_CONSOLE = "http://127.0.0.1:9", True
    assert isinstance(providers.providers_for("sms")[0], TwilioSmsProvider)


def test_without_either_sms_is_off(settings) -> None:
    settings.SMS_API_URL, settings.SMS_CONSOLE = "", False
    assert channels.channels_for("confirmation", WITH_PHONE) == ["email"]


def test_the_test_settings_have_no_console_sms(settings) -> None:
    assert settings.SMS_CONSOLE is False, "DATABASE_URL is set: SMS needs SMS_API_URL"
