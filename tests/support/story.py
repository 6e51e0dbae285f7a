"""An attendee with a story to tell: an applied delivery, a rejected one, a dead e-mail with its
attempt. Seeded through the real intake (Django's test client) and the real apply service, so the
story page reads rows exactly as production writes them."""

from __future__ import annotations

from dataclasses import dataclass

from django.test import Client
from django.utils import timezone

from apps.notifications.models import Notification, NotificationAttempt
from apps.registrations.models import Registration
from apps.registrations.services import registration_apply
from apps.webhooks.models import Portal
from tests.notifications.factories import NotificationAttemptFactory
from tests.support.webhooks import encode, payload, signed_headers

HOSTILE_NAME = "<script>alert('x')</script>"


@dataclass(frozen=True)
class SeededStory:
    registration: Registration
    dead_email: Notification
    accepted_delivery_id: str
    rejected_delivery_id: str


def deliver(portal: Portal, body: bytes, delivery_id: str) -> dict[str, object]:
    headers = {k: v for k, v in signed_headers(body, delivery_id=delivery_id).items() if k != "content-type"}
    response = Client().post(f"/webhooks/{portal.slug}/", data=body, content_type="application/json", headers=headers)
    assert response.status_code in (202, 422), response.content
    return response.json()


def seed_attendee_story(
    portal: Portal, *, registration_id: str = "R-2001", email: str = "grace@example.org", first_name: str = "Grace"
) -> SeededStory:
    accepted_id, rejected_id = f"msg_{registration_id}_created", f"msg_{registration_id}_broken"
    accepted = deliver(portal, encode(payload(registration_id, email=email, first_name=first_name)), accepted_id)
    registration_apply(event_id=str(accepted["event_id"]), message_id=f"seed-{registration_id}")
    # Given a later delivery the schema refuses (a broken e-mail address, a hostile first name) ...
    deliver(
        portal,
        encode(
            payload(registration_id, event_type="registration.updated", email="not-an-address", first_name=HOSTILE_NAME)
        ),
        rejected_id,
    )
    registration = Registration.objects.get(portal=portal, external_id=registration_id)
    # ... and an e-mail confirmation the mail server refused for good.
    dead = Notification.objects.get(registration=registration, kind="confirmation", channel="email")
    NotificationAttemptFactory(
        notification=dead,
        number=1,
        started_at=timezone.now(),
        duration_ms=137,
        outcome=NotificationAttempt.Outcome.PERMANENT_ERROR,
        provider="smtp",
        error_code="smtp_permanent",
        error_message="550 5.1.1 mailbox unavailable",
    )
    Notification.objects.filter(id=dead.id).update(
        status=Notification.Status.DEAD,
        attempts=1,
        last_error_code="smtp_permanent",
        last_error_message="550 5.1.1 mailbox unavailable",
    )
    dead.refresh_from_db()
    return SeededStory(
        registration=registration, dead_email=dead, accepted_delivery_id=accepted_id, rejected_delivery_id=rejected_id
    )
