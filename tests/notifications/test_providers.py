"""Providers sort failures into transient and permanent, each with a stable code."""

from __future__ import annotations

import json

import pytest
import requests
from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused, AnymailRequestsAPIError
from django.core.mail.backends.smtp import EmailBackend as SmtpEmailBackend

from apps.notifications.channels import providers_for, reset_providers
from apps.notifications.channels.email.providers import EmailProvider, _esp_error
from apps.notifications.channels.sms.twilio import TwilioSmsProvider
from apps.notifications.errors import (
    ProviderDownError,
    ProviderMisconfiguredError,
    ProviderPermanentError,
    ProviderRecipientRefusedError,
    ProviderTransientError,
)
from apps.notifications.providers import OutgoingMessage
from eventplatform.errors import CATALOGUE
from tests.support.sms import SmsApi
from tests.support.smtp import SmtpServer

MESSAGE = OutgoingMessage(notification_id="n-1", recipient="ada@example.org", subject="Hi", text="Hello")
SMS = OutgoingMessage(notification_id="n-2", recipient="+4915112345678", subject="", text="Hello")


def smtp_provider(server: SmtpServer) -> EmailProvider:
    return EmailProvider(
        backend="django.core.mail.backends.smtp.EmailBackend", host="127.0.0.1", port=server.port, timeout=5
    )


def sms_provider(api: SmsApi) -> TwilioSmsProvider:
    return TwilioSmsProvider(
        base_url=api.url, account_sid="AC_test", auth_token="token", sender="+4930123456", timeout=5
    )


@pytest.mark.parametrize(
    ("reply", "error", "code"),
    [
        ("451 4.3.0 try later", ProviderTransientError, "smtp_message_deferred"),
        ("421 4.7.0 too busy", ProviderDownError, "smtp_service_unavailable"),
        ("550 5.1.1 no such user", ProviderPermanentError, "smtp_message_rejected"),
        ("552 5.3.4 too big", ProviderPermanentError, "smtp_message_too_large"),
    ],
)
def test_smtp_replies_are_sorted(smtp_server: SmtpServer, reply: str, error: type, code: str) -> None:
    smtp_server.handler.scripted_replies.append(reply)
    provider = smtp_provider(smtp_server)
    with pytest.raises(error) as raised:
        provider.send(MESSAGE)
    assert raised.value.code == code
    assert provider.send(MESSAGE)  # the broken connection was discarded; the next send works
    assert len(smtp_server.messages) == 1


def test_an_unknown_recipient_is_refused_at_handover_with_the_remote_status(smtp_server: SmtpServer) -> None:
    async def refuse(server, session, envelope, address, options):
        return "550 5.1.1 no such mailbox"

    smtp_server.handler.handle_RCPT = refuse
    with pytest.raises(ProviderRecipientRefusedError) as raised:
        smtp_provider(smtp_server).send(MESSAGE)
    assert raised.value.code == "smtp_recipient_unknown"
    assert (raised.value.remote_status, raised.value.diagnostic) == ("5.1.1", "smtp; 550 5.1.1 no such mailbox")


def test_an_unreachable_smtp_server_is_provider_down() -> None:
    provider = EmailProvider(backend="django.core.mail.backends.smtp.EmailBackend", host="127.0.0.1", port=9)
    with pytest.raises(ProviderDownError) as raised:
        provider.send(MESSAGE)
    assert raised.value.code == "smtp_connection_failed"


class SigningBackend(SmtpEmailBackend):
    """Stands for a subclass of Django's SMTP backend that changes what is sent (DKIM signing, say)."""

    def send_messages(self, email_messages):
        for message in email_messages:
            message.extra_headers["X-Signed-By"] = "subclass"
        return super().send_messages(email_messages)


def test_djangos_smtp_backend_gets_our_bytes_and_a_subclass_its_own_methods(smtp_server: SmtpServer) -> None:
    message = OutgoingMessage(
        notification_id="n-3", recipient="ada@example.org", subject="Hi", text="Hello\n", html="<p>Hello</p>"
    )
    smtp_provider(smtp_server).send(message)
    signing = EmailProvider(backend=f"{__name__}.SigningBackend", host="127.0.0.1", port=smtp_server.port, timeout=5)
    signing.send(message)
    plain, signed = smtp_server.messages
    assert plain["X-Signed-By"] is None and signed["X-Signed-By"] == "subclass"
    for received in (plain, signed):
        assert (
            received["X-Eventplatform-Notification-Id"] == "n-3"
            and received.get_content_type() == "multipart/alternative"
        )


def test_a_malformed_address_is_permanent(smtp_server: SmtpServer) -> None:
    bad = OutgoingMessage(
        notification_id="n-3", recipient="ada@example.org\r\nBcc: x@example.org", subject="Hi", text="Hello"
    )
    with pytest.raises(ProviderPermanentError) as raised:
        smtp_provider(smtp_server).send(bad)
    assert raised.value.code == "invalid_recipient"
    assert smtp_server.messages == []


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (429, ProviderTransientError, "sms_transient"),
        (500, ProviderTransientError, "sms_transient"),
        (503, ProviderTransientError, "sms_transient"),
        (400, ProviderPermanentError, "sms_permanent"),
        (401, ProviderMisconfiguredError, "sms_auth_failed"),
        (404, ProviderMisconfiguredError, "sms_misconfigured"),
    ],
)
def test_sms_api_statuses_are_sorted(sms_api: SmsApi, status: int, error: type, code: str) -> None:
    sms_api.scripted_statuses.append(status)
    with pytest.raises(error) as raised:
        sms_provider(sms_api).send(SMS)
    assert raised.value.code == code


def test_sms_is_sent_as_twilio_expects(sms_api: SmsApi) -> None:
    sid = sms_provider(sms_api).send(SMS)
    assert sid.startswith("SM")
    assert sms_api.received == [{"To": "+4915112345678", "From": "+4930123456", "Body": "Hello"}]


def test_twilios_invalid_number_error_is_sms_invalid_number(monkeypatch, sms_api: SmsApi) -> None:
    response = requests.Response()
    response.status_code, response._content = 400, json.dumps({"code": 21211, "message": "invalid To"}).encode()
    provider = sms_provider(sms_api)
    monkeypatch.setattr(requests.Session, "post", lambda *args, **kwargs: response)
    with pytest.raises(ProviderPermanentError) as raised:
        provider.send(SMS)
    assert raised.value.code == "sms_invalid_number"


def test_an_unreachable_sms_api_is_transient() -> None:
    provider = TwilioSmsProvider(base_url="http://127.0.0.1:9", account_sid="AC", auth_token="t", sender="+1")
    with pytest.raises(ProviderTransientError) as raised:
        provider.send(SMS)
    assert raised.value.code == "sms_transient"


def api_error(message: str, status: int) -> AnymailAPIError:
    """What anymail raises for an ESP's HTTP error: the status and the response it came with."""
    response = requests.Response()
    response.status_code, response.reason, response._content = status, "scripted", b"{}"
    return AnymailAPIError(message, status_code=status, response=response)


@pytest.mark.parametrize(
    ("error", "kind", "code"),
    [
        (api_error("rate", 429), ProviderTransientError, "esp_transient"),
        (api_error("down", 502), ProviderTransientError, "esp_transient"),
        (AnymailAPIError("no connection"), ProviderTransientError, "esp_transient"),
        (api_error("bad key", 401), ProviderMisconfiguredError, "esp_auth_failed"),
        (api_error("bad message", 422), ProviderPermanentError, "esp_permanent"),
        (AnymailRecipientsRefused("bounced"), ProviderRecipientRefusedError, "esp_recipient_refused"),
        (AnymailRequestsAPIError("timeout"), ProviderTransientError, "esp_transient"),
        (KeyError("bug"), ProviderTransientError, "provider_error"),
    ],
)
def test_esp_errors_are_sorted_by_anymails_class_and_status(error: Exception, kind: type, code: str) -> None:
    sorted_error = _esp_error(error)
    assert isinstance(sorted_error, kind) and sorted_error.code == code and code in CATALOGUE


def test_fallback_provider_comes_from_email_fallback_url(settings, smtp_server: SmtpServer) -> None:
    settings.EMAIL_FALLBACK_URL = smtp_server.url
    reset_providers()
    primary, fallback = providers_for("email")
    assert (primary.name, fallback.name) == ("email", "email_fallback")
    assert fallback.send(MESSAGE) and len(smtp_server.messages) == 1


def test_without_a_fallback_the_channel_has_one_provider(settings) -> None:
    settings.EMAIL_FALLBACK_URL = settings.EMAIL_FALLBACK_BACKEND = ""
    reset_providers()
    assert [p.name for p in providers_for("email")] == ["email"]
