"""Parse once (issue 17 item 5): the validated, normalised address and phone are what is stored,
applied and sent; the raw body stays beside them for staff."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client

from apps.notifications.models import Notification
from apps.notifications.services import notification_send
from apps.registrations.models import Registration
from apps.registrations.services import registration_apply
from apps.webhooks.models import Portal, WebhookEvent
from eventplatform.addresses import email_key, normalise_email, normalise_phone
from tests.support.sms import SmsApi
from tests.support.smtp import SmtpServer
from tests.support.webhooks import encode, payload, signed_headers

pytestmark = pytest.mark.django_db


def deliver(client: Client, body: dict) -> WebhookEvent:
    raw = encode(body)
    headers = {k: v for k, v in signed_headers(raw).items() if k != "content-type"}
    response = client.post("/webhooks/pretix/", data=raw, content_type="application/json", headers=headers)
    assert response.status_code == 202, response.content
    return WebhookEvent.objects.get(pk=response.json()["event_id"])


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("ada@example.org\r\n", "ada@example.org"),
        ("  ada@example.org  ", "ada@example.org"),
        ("\tAda.Lovelace@Example.ORG\n", "Ada.Lovelace@example.org"),  # the local part is kept as given
    ],
)
def test_normalise_email(raw: str, normal: str) -> None:
    assert normalise_email(raw) == normal and normalise_email(normal) == normal
    assert email_key(raw) == normal.lower()


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("+4915112345678\n", "+4915112345678"),
        (" +49 151 1234 5678 ", "+4915112345678"),
        ("+49 (151) 1234-56.78", "+4915112345678"),
        (None, ""),
    ],
)
def test_normalise_phone(raw: str | None, normal: str) -> None:
    assert normalise_phone(raw) == normal


def test_padded_address_and_phone_are_stored_applied_and_sent_trimmed(
    client: Client, portal: Portal, email_via_smtp: SmtpServer, sms_via_api: SmsApi
) -> None:
    # Given: a portal pads the address with spaces and a CRLF, the phone with a newline and spaces
    event = deliver(client, payload("R-PAD", email="  Ada@Example.ORG \r\n", phone="+49 151 1234 5678\n"))

    # Then: the stored payload is the normalised one, the raw body keeps what was sent
    attendee = event.payload["data"]["attendee"]
    assert (attendee["email"], attendee["phone"]) == ("Ada@example.org", "+4915112345678")
    assert b"Ada@Example.ORG \\r\\n" in bytes(event.raw_body)

    # When: it is applied (a phone with a newline overflowed varchar(20) before) and sent
    assert registration_apply(event_id=str(event.id), message_id=uuid.uuid4().hex).outcome == "applied"
    registration = Registration.objects.get(external_id="R-PAD")
    assert (registration.email, registration.phone) == ("Ada@example.org", "+4915112345678")
    notifications = list(Notification.objects.filter(registration=registration))
    assert {(n.channel, n.recipient) for n in notifications} == {
        ("email", "Ada@example.org"),
        ("sms", "+4915112345678"),
    }
    for notification in notifications:
        assert notification_send(notification_id=str(notification.id)).outcome == "sent"

    # Then: both arrived, at the trimmed address and number
    assert [message["To"] for message in email_via_smtp.messages] == ["Ada@example.org"]
    assert [form["To"] for form in sms_via_api.received] == ["+4915112345678"]
    assert Notification.objects.filter(status="sent").count() == 2


def test_an_event_stored_raw_before_normalising_applies_with_the_validated_value(portal: Portal) -> None:
    """Events stored before the intake normalised (payload as sent) apply normalised too."""
    from apps.webhooks.services import webhook_event_record

    body = payload("R-OLD", email="ada@example.org\r\n", phone="+4915112345678\n")
    recorded = webhook_event_record(
        portal=portal, delivery_id="old-1", event_type=body["type"], raw_body=encode(body), payload=body
    )
    assert registration_apply(event_id=str(recorded.event_id), message_id=uuid.uuid4().hex).outcome == "applied"
    registration = Registration.objects.get(external_id="R-OLD")
    assert (registration.email, registration.phone) == ("ada@example.org", "+4915112345678")
