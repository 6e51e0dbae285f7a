"""Every row of the failure classification (each channel's classification.py), driven against
a real server: aiosmtpd (tests/support/smtp.py) answering the row's reply at its stage, a scripted
TCP server for what aiosmtpd cannot say, or the HTTP stand-in for the SMS API and an ESP (Postmark's
API through django-anymail). One case per row; the docs carry the same table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from apps.notifications import channels, classification
from apps.notifications.channels.email.providers import EmailProvider
from apps.notifications.channels.sms.twilio import TwilioSmsProvider
from apps.notifications.classification import Rule
from apps.notifications.errors import ProviderError
from apps.notifications.providers import OutgoingMessage
from tests.support.polling import free_port
from tests.support.sms import SmsApi
from tests.support.smtp import ScriptedSmtpServer, SmtpServer

ROOT = Path(__file__).resolve().parents[2]
RULES = channels.rules()  # every registered channel's rows
MESSAGE = OutgoingMessage(notification_id="n-1", recipient="ada@example.org", subject="Hi", text="Hello")
SMS = OutgoingMessage(notification_id="n-2", recipient="+4915112345678", subject="", text="Hello")
SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


def smtp(port: int, **options: Any) -> EmailProvider:
    return EmailProvider(backend=SMTP_BACKEND, host="127.0.0.1", port=port, timeout=2, **options)


Scenario = Callable[[], Iterator[Callable[[], str]]]  # sets the server up, yields the send


@contextmanager
def aiosmtpd(
    stage: str | None = None,
    reply: str = "",
    *,
    auth: bool = False,
    greylist: int = 0,
    data_delay: float | None = 0.0,
    **options: Any,
) -> Iterator[Callable[[], str]]:
    server = SmtpServer(auth=auth).start()
    server.handler.data_delay = data_delay
    try:
        if stage:
            server.handler.always[stage] = reply
        server.handler.greylist_tries = greylist
        if auth:
            options.update(username="events", password="secret")
        yield lambda: smtp(server.port, **options).send(MESSAGE)
    finally:
        server.stop()


@contextmanager
def scripted(greeting: str | None, **options: Any) -> Iterator[Callable[[], str]]:
    server = ScriptedSmtpServer(greeting=greeting).start()
    try:
        yield lambda: smtp(server.port, **options).send(MESSAGE)
    finally:
        server.stop()


@contextmanager
def nothing_listening(protocol: str) -> Iterator[Callable[[], str]]:
    port = free_port()
    if protocol == "smtp":
        yield lambda: smtp(port).send(MESSAGE)
    elif protocol == "sms":
        yield lambda: TwilioSmsProvider(
            base_url=f"http://127.0.0.1:{port}",
            account_sid="AC_test",
            auth_token="token",
            sender="+4930123456",
            timeout=2,
        ).send(SMS)
    else:
        yield lambda: esp(f"http://127.0.0.1:{port}").send(MESSAGE)


@contextmanager
def silent_after_data() -> Iterator[Callable[[], str]]:
    """The whole message is written and the final "." is never answered (EMAIL_DATA_TIMEOUT_SECONDS 1 s)."""
    with override_settings(EMAIL_DATA_TIMEOUT_SECONDS=1), aiosmtpd(data_delay=None) as send:
        yield send


@contextmanager
def sms(
    status: int | None = None,
    body: dict | None = None,
    *,
    token: str = "token",
    headers: dict | None = None,
    answer_delay: float = 0.0,
    listing_status: int | None = None,
) -> Iterator[Callable[[], str]]:
    api = SmsApi().start()
    api.answer_delay, api.listing_status = answer_delay, listing_status
    try:
        if status:
            api.scripted_replies.append(
                (status, body or {"code": 20000 + status, "message": "scripted"}, headers or {})
            )
        yield lambda: TwilioSmsProvider(
            base_url=api.url,
            account_sid="AC_test",
            auth_token=token,
            sender="+4930123456",
            timeout=1 if answer_delay else 5,
        ).send(SMS)
    finally:
        api.stop()


def esp(url: str) -> EmailProvider:
    return EmailProvider(
        "esp", backend="anymail.backends.postmark.EmailBackend", server_token="pm-test", api_url=url + "/"
    )


@contextmanager
def postmark(status: int, body: dict, headers: dict | None = None) -> Iterator[Callable[[], str]]:
    api = SmsApi().start()
    try:
        api.scripted_replies.append((status, body, headers or {}))
        yield lambda: esp(api.url).send(MESSAGE)
    finally:
        api.stop()


INACTIVE = (
    "You tried to send to a recipient that has been marked as inactive.\n Found inactive addresses: "
    "ada@example.org.\n Inactive recipients are ones that have generated a hard bounce or a spam complaint."
)

# (protocol, the row's example) -> how to make a real server answer that way.
SCENARIOS: dict[tuple[str, str], Callable[[], Any]] = {
    (
        "smtp",
        "no reply to the final '.' within EMAIL_DATA_TIMEOUT_SECONDS, or the connection closed before it",
    ): silent_after_data,
    ("smtp", "connection refused / reset / closed"): lambda: nothing_listening("smtp"),
    ("smtp", "no answer within EMAIL_TIMEOUT"): lambda: scripted(None),
    ("smtp", "TLS handshake failed, STARTTLS not offered"): lambda: aiosmtpd(use_tls=True),
    ("smtp", "421 service not available (any stage)"): lambda: aiosmtpd("RCPT", "421 4.3.2 Service shutting down"),
    ("smtp", "454 TLS not available"): lambda: scripted("220 scripted ESMTP", use_tls=True),
    ("smtp", "454 temporary authentication failure"): lambda: aiosmtpd(
        "AUTH", "454 4.7.0 Temporary authentication failure", auth=True
    ),
    ("smtp", "4xx greeting"): lambda: scripted("450 4.3.2 Not accepting connections now"),
    ("smtp", "554 greeting: no service for us (our IP)"): lambda: scripted("554 5.7.1 No SMTP service for you"),
    ("smtp", "AUTH not offered by the server"): lambda: aiosmtpd(username="events", password="secret"),
    ("smtp", "535 5.7.8 credentials invalid"): lambda: aiosmtpd(
        "AUTH", "535 5.7.8 Authentication credentials invalid", auth=True
    ),
    ("smtp", "530 5.7.0 authentication required (MAIL/RCPT)"): lambda: aiosmtpd(
        "MAIL", "530 5.7.0 Authentication required"
    ),
    ("smtp", "554 5.7.1 relay access denied"): lambda: aiosmtpd(
        "RCPT", "554 5.7.1 <ada@example.org>: Relay access denied"
    ),
    ("smtp", "554 5.7.1 (policy: we may not send here)"): lambda: aiosmtpd("RCPT", "554 5.7.1 Access denied"),
    ("smtp", "451 at MAIL FROM: server cannot take mail"): lambda: aiosmtpd(
        "MAIL", "451 4.3.0 Mail server temporarily rejected message"
    ),
    ("smtp", "553/554 at MAIL FROM: our sender refused"): lambda: aiosmtpd(
        "MAIL", "553 5.7.1 Sender address rejected: not owned by user"
    ),
    ("smtp", "450/451 greylisting, mailbox busy"): lambda: aiosmtpd(greylist=1),
    ("smtp", "452 mailbox full (552 at RCPT means 452)"): lambda: aiosmtpd("RCPT", "452 4.2.2 Mailbox full"),
    ("smtp", "550 5.1.1 no such user (any 5.1.x: the address is bad): bounced, suppressed"): lambda: aiosmtpd(
        "RCPT", "550 5.1.1 No such user here"
    ),
    ("smtp", "550 5.7.1 at RCPT: refused by the server's policy, not for the address"): lambda: aiosmtpd(
        "RCPT", "550 5.7.1 Recipient refused by local policy"
    ),
    ("smtp", "451 at DATA: try again later"): lambda: aiosmtpd("DATA", "451 4.3.0 Try again later"),
    ("smtp", "552 message exceeds storage allocation"): lambda: aiosmtpd("DATA", "552 5.3.4 Message too big"),
    ("smtp", "554 content rejected (spam, virus)"): lambda: aiosmtpd("DATA", "554 5.7.1 Message rejected as spam"),
    ("smtp", "any other 4xx"): lambda: aiosmtpd("DATA", "471 4.7.0 Local policy violation"),
    ("smtp", "any other 5xx"): lambda: aiosmtpd("DATA", "551 5.7.1 User not local"),
    (
        "sms",
        "request sent, no answer in SMS_TIMEOUT_SECONDS, and the message listing could not be asked whether it arrived",
    ): lambda: sms(answer_delay=3, listing_status=503),
    ("sms", "timeout, connection refused"): lambda: nothing_listening("sms"),
    ("sms", "429 with Retry-After: this send waits that long"): lambda: sms(
        429, {"code": 20429, "message": "Too Many Requests"}, headers={"Retry-After": "2"}
    ),
    ("sms", "429, 5xx"): lambda: sms(503),
    ("sms", "Twilio 20003 authentication failed"): lambda: sms(token="wrong-token"),
    ("sms", "401/403"): lambda: sms(403, {"code": 20403, "message": "Forbidden"}),
    ("sms", "404: wrong SMS_API_URL or account SID"): lambda: sms(404, {"code": 20404, "message": "Not found"}),
    ("sms", "Twilio 21606 our From number is not ours"): lambda: sms(400, {"code": 21606, "message": "From"}),
    ("sms", "Twilio 21610 the number replied STOP: suppressed (opted_out)"): lambda: sms(
        400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient"}
    ),
    ("sms", "Twilio 21211 invalid To, 21614 not a mobile number: bounced, suppressed"): lambda: sms(
        400, {"code": 21211, "message": "The 'To' number is not a valid phone number."}
    ),
    ("sms", "Twilio 14107 too many to this recipient"): lambda: sms(400, {"code": 14107, "message": "rate"}),
    ("sms", "any other 4xx"): lambda: sms(400, {"code": 21000, "message": "something else"}),
    ("esp", "AnymailRecipientsRefused: bounced, suppressed"): lambda: postmark(
        422, {"ErrorCode": 406, "Message": INACTIVE}
    ),
    ("esp", "ESP API unreachable (no HTTP status)"): lambda: nothing_listening("esp"),
    ("esp", "429 with Retry-After: this send waits that long"): lambda: postmark(
        429, {"ErrorCode": 0, "Message": "Rate limit exceeded"}, {"Retry-After": "2"}
    ),
    ("esp", "429, 5xx"): lambda: postmark(503, {"ErrorCode": 0, "Message": "Service unavailable"}),
    ("esp", "401/403: API key wrong or revoked"): lambda: postmark(
        401, {"ErrorCode": 10, "Message": "Bad or missing Server API token"}
    ),
    ("esp", "any other 4xx (the message is invalid)"): lambda: postmark(
        422, {"ErrorCode": 300, "Message": "Invalid email request"}
    ),
}


def test_every_row_has_a_scenario_and_docs_show_the_same_table() -> None:
    assert set(SCENARIOS) == {(rule.protocol, rule.example) for rule in RULES}
    assert classification.table_markdown(RULES) in (ROOT / "docs" / "notifications.md").read_text()


@pytest.mark.parametrize("rule", RULES, ids=[f"{r.protocol}-{r.error_code}-{r.example[:30]}" for r in RULES])
def test_each_row_against_a_real_server(rule: Rule) -> None:
    with SCENARIOS[(rule.protocol, rule.example)]() as send, pytest.raises(ProviderError) as raised:
        send()
    error = raised.value
    assert (error.failure_class, error.code) == (rule.failure_class, rule.error_code), error.message
    assert error.details is rule, f"matched another row: {error.details}"
    if rule.failure_class in classification.REFUSED_AT_HANDOVER:
        # What the recipient's side said, kept on the bounced notification (CONTRACT section 8)
        assert error.remote_status and error.diagnostic, error.message
