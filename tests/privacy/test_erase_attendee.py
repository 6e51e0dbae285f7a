"""erase_attendee: after it, the person's e-mail address and phone numbers appear in no table."""

from __future__ import annotations

import io
import json
import re
import uuid

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.notifications.delivery import (
    DeliveryReport,
    ReportOutcome,
    notification_report_record,
    suppression_active,
    suppression_add,
)
from apps.notifications.models import Notification, NotificationReport, Suppression
from apps.privacy.erasure import email_digest
from apps.privacy.models import ErasureRecord
from apps.registrations.models import FailedApply, Registration
from apps.registrations.services import registration_apply
from apps.webhooks.models import Portal, WebhookEvent
from tests.notifications.factories import NotificationAttemptFactory
from tests.support.webhooks import encode, payload, signed_headers

pytestmark = pytest.mark.django_db

EMAIL, PHONE, NEW_PHONE = "ada.erase@example.org", "+4915112345678", "+4915100000001"
OTHER_EMAIL, OTHER_PHONE = "grace@example.org", "+4915177777777"
# Contain the person's address and number, but are someone else's.
LONGER_EMAIL, LONGER_PHONE = "x" + EMAIL, PHONE + "9"


def deliver(body: dict) -> WebhookEvent:
    """Through the real intake view, as a portal sends it."""
    raw = encode(body)
    headers = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in signed_headers(raw).items() if k != "content-type"}
    response = Client().post("/webhooks/pretix/", data=raw, content_type="application/json", **headers)
    assert response.status_code in (202, 422), response.content
    return WebhookEvent.objects.get(
        pk=response.json()["event_id"] if response.status_code == 202 else WebhookEvent.objects.latest("received_at").pk
    )


def apply(event: WebhookEvent) -> None:
    assert registration_apply(event_id=str(event.id), message_id=uuid.uuid4().hex).outcome == "applied"


def tables_mentioning(needle: str) -> dict[str, int]:
    """Every table's rows as text (and every bytea column's bytes), searched for `needle` as a whole
    address or number (not inside a longer one): an independent look, not the erasure's own queries."""
    whole = rf"(^|[^[:alnum:]_.+-]){re.escape(needle)}($|[^[:alnum:]_-])"
    found = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT count(*) FROM "{table}" t WHERE t::text ~* %s', [whole])
            count = cursor.fetchone()[0]
            cursor.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND data_type = 'bytea'",
                [table],
            )
            for (column,) in cursor.fetchall():
                cursor.execute(f'SELECT count(*) FROM "{table}" WHERE encode("{column}", \'escape\') ~* %s', [whole])
                count += cursor.fetchone()[0]
            if count:
                found[table] = count
    return found


def test_nothing_of_the_person_is_left_anywhere_and_the_erasure_is_recorded(portal: Portal) -> None:
    # Given a registration created, then updated with a new phone, a rejected delivery naming the
    # person, an attempt and a failed apply whose error messages name them, and a bystander
    created = deliver(payload("R-ERASE", email=EMAIL, phone=PHONE, first_name="Ada"))
    apply(created)
    updated = deliver(
        payload(
            "R-ERASE",
            event_type="registration.updated",
            email=EMAIL,
            phone=NEW_PHONE,
            first_name="Ada",
            event_name="PyData Berlin 2026",
        )
    )
    apply(updated)
    deliver(payload("R-ERASE-2", email=EMAIL.upper(), phone=PHONE, role="boss"))  # 422, kept as rejected
    waiting = deliver(payload("R-ERASE-3", email=EMAIL, phone=None))  # accepted, its apply failed for good
    FailedApply.objects.create(
        webhook_event=waiting,
        event_id=waiting.id,
        error_code="apply_error",
        error_message=f"no luck for {EMAIL}",
        first_failed_at=timezone.now(),
        last_failed_at=timezone.now(),
    )
    bystander = deliver(payload("R-OTHER", email=OTHER_EMAIL, phone=OTHER_PHONE, first_name="Grace"))
    apply(bystander)
    lookalike = deliver(payload("R-LOOKALIKE", email=LONGER_EMAIL, phone=LONGER_PHONE, first_name="Xada"))
    apply(lookalike)
    notification = Notification.objects.filter(registration__external_id="R-ERASE", channel="email").first()
    NotificationAttemptFactory(
        notification=notification,
        number=1,
        started_at=timezone.now(),
        duration_ms=3,
        outcome="permanent_error",
        error_code="invalid_recipient",
        error_message=f"SMTP 550 for the recipient: <{EMAIL}> unknown",
    )
    for needle in (EMAIL, PHONE, NEW_PHONE, LONGER_EMAIL):
        assert "webhooks_webhookevent" in tables_mentioning(needle), f"the search finds {needle} before the erasure"

    # When
    out = io.StringIO()
    call_command("erase_attendee", "  Ada.Erase@EXAMPLE.org ", "--requested-by", "dpo", stdout=out)

    # Then nothing of the person is left, in any table
    for needle in (EMAIL, PHONE, NEW_PHONE):
        assert tables_mentioning(needle) == {}, needle
    registration = Registration.objects.get(external_id="R-ERASE")
    assert (registration.email, registration.phone, registration.first_name) == ("", "", "")
    assert registration.status == Registration.Status.CANCELLED
    assert not Notification.objects.filter(registration=registration, status="pending").exists(), (
        "nothing more is sent to someone erased"
    )
    assert set(Notification.objects.filter(registration=registration).values_list("recipient", flat=True)) == {""}
    event = WebhookEvent.objects.get(pk=created.pk)
    assert bytes(event.raw_body) == b"" and event.payload["redacted"] == "erasure"
    assert event.payload["data"]["registration_id"] == "R-ERASE", "the event's skeleton stays"
    # ... the bystander is untouched ...
    other = Registration.objects.get(external_id="R-OTHER")
    assert (other.email, other.phone, other.status) == (OTHER_EMAIL, OTHER_PHONE, "active")
    assert (
        json.loads(bytes(WebhookEvent.objects.get(pk=bystander.pk).raw_body))["data"]["attendee"]["email"]
        == OTHER_EMAIL
    )
    assert Notification.objects.filter(registration=other, status="pending").exists()
    lookalike_registration = Registration.objects.get(external_id="R-LOOKALIKE")
    assert (lookalike_registration.email, lookalike_registration.phone) == (LONGER_EMAIL, LONGER_PHONE), (
        "an address that merely contains the erased one is someone else's"
    )
    assert bytes(WebhookEvent.objects.get(pk=lookalike.pk).raw_body), "their delivery is untouched"
    assert set(tables_mentioning(LONGER_EMAIL)) >= {"webhooks_webhookevent", "registrations_registration"}
    # ... and the erasure is recorded without the address.
    record = ErasureRecord.objects.get()
    assert record.email_sha256 == email_digest(EMAIL) and record.requested_by == "dpo"
    assert record.counts["webhook_events"] == 4 and record.counts["registrations"] == 1
    assert "erasure #" in out.getvalue()

    # A second run finds nothing more to redact.
    call_command("erase_attendee", EMAIL, stdout=io.StringIO())
    assert ErasureRecord.objects.latest("erased_at").counts["webhook_events"] == 0


def test_delivery_reports_are_scrubbed_and_an_active_suppression_is_kept(portal: Portal, settings) -> None:
    settings.SMS_API_URL = "http://sms.invalid"  # the SMS confirmation is created
    # Given a sent confirmation that bounced (the DSN quotes the address), and an SMS whose number
    # was suppressed and lifted again by staff
    apply(deliver(payload("R-BOUNCE", email=EMAIL, phone=PHONE, first_name="Ada")))
    email, sms = (Notification.objects.get(registration__external_id="R-BOUNCE", channel=c) for c in ("email", "sms"))
    Notification.objects.filter(id__in=[email.id, sms.id]).update(status="sent")
    notification_report_record(
        report=DeliveryReport(
            source="dsn",
            outcome=ReportOutcome.BOUNCED,
            permanent=True,
            status_code="5.1.1",
            diagnostic=f"smtp; 550 5.1.1 <{EMAIL}>: Recipient address rejected",
            reported_at=None,
            details={"Final-Recipient": f"rfc822; {EMAIL}", "Action": "failed"},
        ),
        notification_id=email.id,
    )
    lifted, _ = suppression_add(channel="sms", address=PHONE, reason="opted_out", note=f"STOP from {PHONE}")
    Suppression.objects.filter(id=lifted.id).update(lifted_at=timezone.now(), lift_reason="Ada asked again")
    # When the person is erased
    call_command("erase_attendee", EMAIL, stdout=io.StringIO())
    # Then the address survives in the active suppression alone (it keeps us from writing to it),
    # the lifted suppression and every report are scrubbed, and the names are gone from the audits
    assert tables_mentioning(EMAIL) == {"notifications_suppression": 1}
    assert tables_mentioning(PHONE) == {}
    report = NotificationReport.objects.get(notification=email)
    assert "[erased]" in report.diagnostic and report.details["Final-Recipient"] == "rfc822; [erased]"
    assert suppression_active(channel="email", address=EMAIL) is not None
    lifted.refresh_from_db()
    assert (lifted.address, lifted.lift_reason) == ("[erased]", "[erased] asked again")
