"""ESP tracking webhooks (apps/notifications/channels/email/tracking.py, CONTRACT section 8) with Mailgun's real
format: e-mails sent through anymail's Mailgun backend (to the stand-in speaking Mailgun's API), then
Mailgun's JSON webhook events, HMAC-signed with the webhook signing key as Mailgun signs them and
posted with the basic auth anymail's WEBHOOK_SECRET asks, to /anymail/mailgun/tracking/."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import secrets
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from apps.notifications.models import Notification, NotificationReport, Suppression
from apps.notifications.sending import notification_send
from tests.support.sms import SmsApi

pytestmark = pytest.mark.django_db(transaction=True)

Status = Notification.Status
SIGNING_KEY = "key-mailgun-webhook-signing"
BASIC_AUTH = "anymail:webhook-password"
URL = "/anymail/mailgun/tracking/"


@pytest.fixture
def mailgun(settings, sms_api: SmsApi) -> SmsApi:
    """E-mail through anymail's Mailgun backend to the stand-in; webhooks secured as in production."""
    settings.EMAIL_BACKEND = "anymail.backends.mailgun.EmailBackend"
    settings.ANYMAIL = {
        "MAILGUN_API_KEY": "key-test",
        "MAILGUN_API_URL": f"{sms_api.url}/v3",
        "MAILGUN_SENDER_DOMAIN": "mg.example.com",
        "WEBHOOK_SECRET": BASIC_AUTH,
        "MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY,
    }
    return sms_api


@pytest.fixture
def sent_email(mailgun: SmsApi, make_notification: Callable[..., Notification]) -> Callable[..., Notification]:
    """An e-mail notification really sent through anymail: its provider_message_id is the id Mailgun's
    API answered (`<...@mg.example.com>`, as Mailgun returns it)."""

    def send(recipient: str = "ada@example.org") -> Notification:
        notification = make_notification(channel="email", email=recipient)
        mailgun.scripted_replies.append(
            (200, {"id": f"<{uuid.uuid4().hex}@mg.example.com>", "message": "Queued. Thank you."})
        )
        notification_send(notification_id=str(notification.id))
        notification.refresh_from_db()
        assert notification.status == Status.SENT
        assert notification.provider_message_id.endswith("@mg.example.com>")
        return notification

    return send


def mailgun_event(
    notification: Notification | None,
    event: str,
    *,
    message_id: str | None = None,
    signing_key: str = SIGNING_KEY,
    token: str | None = None,
    **event_data: Any,
) -> dict[str, Any]:
    """A Mailgun webhook body (documentation.mailgun.com, "Webhook Payloads"): the signature block
    (HMAC-SHA256 of timestamp + token, hex, keyed with the webhook signing key) and event-data, whose
    message-id header comes without angle brackets."""
    timestamp = str(int(time.time()))
    token = token or secrets.token_hex(25)
    signature = hmac.new(signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    if message_id is None:
        assert notification is not None
        message_id = notification.provider_message_id.strip("<>")
    recipient = notification.recipient if notification else "nobody@example.org"
    data: dict[str, Any] = {
        "event": event,
        "id": secrets.token_urlsafe(16),
        "timestamp": time.time(),
        "log-level": "info" if event == "delivered" else "error",
        "recipient": recipient,
        "recipient-domain": recipient.split("@")[1],
        "envelope": {"sender": "no-reply@mg.example.com", "targets": recipient, "transport": "smtp"},
        "flags": {"is-authenticated": True, "is-test-mode": False},
        "message": {
            "headers": {
                "to": recipient,
                "message-id": message_id,
                "from": "Eventplatform <no-reply@mg.example.com>",
                "subject": "Your registration",
            },
            "attachments": [],
            "size": 2048,
        },
        "tags": [],
        "user-variables": {},
        "storage": {"key": "message_key", "url": "https://se.api.mailgun.net/v3/domains/mg.example.com/messages/k"},
    }
    data.update(event_data)
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": data}


def post(client: Client, body: dict[str, Any], *, auth: str | None = BASIC_AUTH):
    headers = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    return client.post(URL, json.dumps(body), content_type="application/json", **headers)


def delivery_status(code: int, message: str, description: str = "") -> dict[str, Any]:
    return {
        "tls": True,
        "mx-host": "mx.example.org",
        "code": code,
        "description": description,
        "attempt-no": 1,
        "message": message,
        "certificate-verified": True,
    }


PERMANENT_550 = {
    "severity": "permanent",
    "reason": "bounce",
    "delivery-status": delivery_status(550, "5.1.1 The email account that you tried to reach does not exist."),
}
PREVIOUSLY_BOUNCED = {
    "severity": "permanent",
    "reason": "suppress-bounce",
    "delivery-status": delivery_status(605, "", "Not delivering to previously bounced address"),
}
TEMPORARY_452 = {
    "severity": "temporary",
    "reason": "generic",
    "delivery-status": delivery_status(452, "4.2.2 The email account that you tried to reach is over quota."),
}
REJECTED = {"reject": {"reason": "Sandbox subdomains are for test purposes only.", "description": ""}}


def history(notification: Notification) -> list[tuple[str, str, str]]:
    return list(
        NotificationReport.objects.filter(notification_id=notification.id)
        .order_by("id")
        .values_list("source", "outcome", "status_code")
    )


def suppressed() -> list[tuple[str, str]]:
    return list(Suppression.objects.filter(channel="email", lifted_at__isnull=True).values_list("address", "reason"))


# --- the table: Mailgun event -> anymail's normalized event -> status (one test per row)

EVENT_ROWS = [
    # (Mailgun event, its fields, status after, history outcome or None, address suppressed?)
    ("delivered", {"delivery-status": delivery_status(250, "OK")}, Status.DELIVERED, "delivered", False),
    ("failed", PERMANENT_550, Status.BOUNCED, "bounced", True),  # anymail: bounced
    ("failed", PREVIOUSLY_BOUNCED, Status.BOUNCED, "bounced", True),  # Mailgun's own bounce list
    ("failed", TEMPORARY_452, Status.SENT, "delayed", False),  # anymail: deferred; history only
    ("rejected", REJECTED, Status.BOUNCED, "bounced", False),  # the ESP refused it: not the address
    ("complained", {}, Status.COMPLAINED, "complained", True),
    ("opened", {}, Status.SENT, None, False),
    ("clicked", {"url": "https://example.org/"}, Status.SENT, None, False),
    ("unsubscribed", {}, Status.SENT, None, False),
    ("accepted", {}, Status.SENT, None, False),  # anymail: queued
    ("stored", {}, Status.SENT, None, False),  # an event anymail does not know: unknown
]


@pytest.mark.parametrize(("event", "fields", "status", "outcome", "suppresses"), EVENT_ROWS)
def test_event_row(
    client: Client,
    sent_email: Callable[..., Notification],
    event: str,
    fields: dict[str, Any],
    status: str,
    outcome: str | None,
    suppresses: bool,
) -> None:
    notification = sent_email()
    assert post(client, mailgun_event(notification, event, **fields)).status_code == 200
    notification.refresh_from_db()
    assert notification.status == status
    assert [row[1] for row in history(notification)] == ([outcome] if outcome else [])
    assert suppressed() == (
        [("ada@example.org", "complained" if event == "complained" else "bounced")] if suppresses else []
    )


def test_a_permanent_bounce_keeps_the_remote_words(client: Client, sent_email: Callable[..., Notification]) -> None:
    notification = sent_email()
    post(client, mailgun_event(notification, "failed", **PERMANENT_550))
    notification.refresh_from_db()
    assert notification.last_error_code == "bounced"  # anymail's reject_reason
    assert "does not exist" in notification.last_error_message
    assert history(notification) == [("esp:mailgun", "bounced", "bounced")]


# --- security


@pytest.mark.parametrize(
    ("case", "auth", "signing_key"),
    [
        ("no basic auth", None, SIGNING_KEY),
        ("wrong basic auth", "anymail:guess", SIGNING_KEY),
        ("right basic auth, signed with another key", BASIC_AUTH, "key-someone-else"),
    ],
)
def test_an_unauthenticated_or_unsigned_event_is_refused_and_changes_nothing(
    client: Client, sent_email: Callable[..., Notification], case: str, auth: str | None, signing_key: str
) -> None:
    notification = sent_email()
    response = post(client, mailgun_event(notification, "failed", signing_key=signing_key, **PERMANENT_550), auth=auth)
    assert response.status_code == 400, case
    notification.refresh_from_db()
    assert notification.status == Status.SENT
    assert history(notification) == []
    assert suppressed() == []


def test_a_signed_body_changed_in_transit_is_refused(client: Client, sent_email: Callable[..., Notification]) -> None:
    # Mailgun signs timestamp + token only; the token is single use at Mailgun, and ours is the
    # dedupe key: a captured event replayed with other content is one history row at most.
    notification = sent_email()
    body = mailgun_event(notification, "delivered")
    body["signature"]["timestamp"] = str(int(body["signature"]["timestamp"]) + 1)
    assert post(client, body).status_code == 400
    notification.refresh_from_db()
    assert notification.status == Status.SENT


# --- order, replays, unknown messages


def test_delivered_then_bounced_ends_bounced(client: Client, sent_email: Callable[..., Notification]) -> None:
    notification = sent_email()
    post(client, mailgun_event(notification, "delivered"))
    notification.refresh_from_db()
    assert notification.status == Status.DELIVERED
    post(client, mailgun_event(notification, "failed", **PERMANENT_550))
    notification.refresh_from_db()
    assert notification.status == Status.BOUNCED
    assert [row[1] for row in history(notification)] == ["delivered", "bounced"]


def test_a_late_delivered_after_bounced_changes_nothing(
    client: Client, sent_email: Callable[..., Notification]
) -> None:
    notification = sent_email()
    post(client, mailgun_event(notification, "failed", **PERMANENT_550))
    post(client, mailgun_event(notification, "delivered"))
    notification.refresh_from_db()
    assert notification.status == Status.BOUNCED
    assert notification.last_error_code == "bounced"
    assert [row[1] for row in history(notification)] == ["bounced", "delivered"]


def test_a_redelivered_event_is_one_history_row(client: Client, sent_email: Callable[..., Notification]) -> None:
    notification = sent_email()
    body = mailgun_event(notification, "failed", **PERMANENT_550)
    for _ in range(3):  # Mailgun retries when it did not get our 200
        assert post(client, body).status_code == 200
    assert len(history(notification)) == 1
    assert Suppression.objects.count() == 1


def test_an_event_for_a_message_we_never_sent_is_200_and_changes_nothing(
    client: Client, sent_email: Callable[..., Notification]
) -> None:
    notification = sent_email()
    body = mailgun_event(None, "failed", message_id="20260203192638.deadbeef@mg.example.com", **PERMANENT_550)
    assert post(client, body).status_code == 200
    notification.refresh_from_db()
    assert notification.status == Status.SENT
    assert NotificationReport.objects.count() == 0
    assert suppressed() == []


def test_an_event_without_a_message_id_matches_nothing(client: Client, sent_email: Callable[..., Notification]) -> None:
    notification = sent_email()
    Notification.objects.filter(id=notification.id).update(provider_message_id="")
    body = mailgun_event(notification, "complained", message_id="")
    del body["event-data"]["message"]["headers"]["message-id"]
    assert post(client, body).status_code == 200
    notification.refresh_from_db()
    assert notification.status == Status.SENT
    assert suppressed() == []


# --- many at once


def test_events_for_many_messages_each_reach_their_own_notification(
    client: Client, sent_email: Callable[..., Notification]
) -> None:
    notifications = [sent_email(f"attendee{index}@example.org") for index in range(24)]
    expected = {}
    for index, notification in enumerate(notifications):
        if index % 4 == 0:
            post(client, mailgun_event(notification, "failed", **PERMANENT_550))
            expected[notification.id] = Status.BOUNCED
        elif index % 4 == 1:
            post(client, mailgun_event(notification, "complained"))
            expected[notification.id] = Status.COMPLAINED
        else:
            post(client, mailgun_event(notification, "delivered"))
            expected[notification.id] = Status.DELIVERED
    statuses = dict(Notification.objects.filter(id__in=expected).values_list("id", "status"))
    assert statuses == expected
    assert sorted(suppressed()) == sorted(
        (n.recipient, "bounced" if i % 4 == 0 else "complained") for i, n in enumerate(notifications) if i % 4 < 2
    )


# --- an ESP whose only webhook security is basic auth (Postmark): without WEBHOOK_SECRET, not believed


def postmark_delivery(notification: Notification) -> dict[str, Any]:
    """Postmark's Delivery webhook (postmarkapp.com/developer/webhooks/delivery-webhook)."""
    return {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": notification.provider_message_id,
        "Recipient": notification.recipient,
        "Tag": "",
        "DeliveredAt": "2026-12-04T07:00:00.9070259Z",
        "Details": "smtp;250 2.0.0 OK",
        "Metadata": {},
    }


@pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailInsecureWebhookWarning")
@pytest.mark.parametrize(("secret", "status"), [(None, Status.SENT), (BASIC_AUTH, Status.DELIVERED)])
def test_postmark_events_count_only_with_the_webhook_secret_set(
    settings, client: Client, make_notification: Callable[..., Notification], secret: str | None, status: str
) -> None:
    settings.ANYMAIL = {"WEBHOOK_SECRET": secret} if secret else {}
    notification = make_notification(channel="email")
    Notification.objects.filter(id=notification.id).update(status=Status.SENT, provider_message_id=str(uuid.uuid4()))
    notification.refresh_from_db()
    headers = {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(secret.encode()).decode()} if secret else {}
    response = client.post(
        "/anymail/postmark/tracking/", json.dumps(postmark_delivery(notification)), "application/json", **headers
    )
    assert response.status_code == 200
    notification.refresh_from_db()
    assert notification.status == status
    assert len(history(notification)) == (1 if secret else 0)


def test_with_the_database_unreachable_an_event_gets_a_5xx_and_its_retry_lands(
    sent_email: Callable[..., Notification],
) -> None:
    from django.db import connection

    from tests.support.polling import free_port

    notification = sent_email()
    body = mailgun_event(notification, "failed", **PERMANENT_550)
    # Given this process's database connection points at a port nothing listens on (PostgreSQL
    # itself stays up for the other tests on this machine).
    real_port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        response = post(Client(raise_request_exception=False), body)
    finally:
        connection.close()
        connection.settings_dict["PORT"] = real_port
    assert response.status_code >= 500  # the ESP keeps the event and retries
    # When Mailgun retries the same event with the database back: recorded once.
    assert post(Client(), body).status_code == 200
    notification.refresh_from_db()
    assert notification.status == Status.BOUNCED
    assert len(history(notification)) == 1


def test_event_log_lines_carry_no_address(
    client: Client, sent_email: Callable[..., Notification], json_log: io.StringIO
) -> None:
    notification = sent_email("grace.hopper@example.org")
    quoting = {
        **PERMANENT_550,
        "delivery-status": delivery_status(550, "5.1.1 <grace.hopper@example.org>: Recipient address rejected"),
    }
    post(client, mailgun_event(notification, "failed", **quoting))
    post(client, mailgun_event(None, "delivered", message_id="unknown@mg.example.com"))
    lines = json_log.getvalue()
    assert "esp.tracking" in lines
    assert "provider_report_unmatched" in lines
    assert "grace.hopper@example.org" not in lines
    notification.refresh_from_db()
    assert "grace.hopper@example.org" in notification.last_error_message  # kept for staff, where erasure scrubs it
