"""Rows of the notifications app for tests: `NotificationFactory(registration=..., status=...)`,
`NotificationAttemptFactory(notification=..., outcome=...)`, `SuppressionFactory(address=...)`; and a
permanent bounce reported through the real service (`record_permanent_bounce`), and the
registration-shaped context the renderer reads (`RENDER_CONTEXT`)."""

from __future__ import annotations

from typing import Any

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from apps.notifications.delivery import DeliveryReport, ReportOutcome, notification_report_record
from apps.notifications.models import Notification, NotificationAttempt, Suppression
from tests.registrations.factories import RegistrationFactory


class NotificationFactory(DjangoModelFactory[Notification]):
    """A pending confirmation e-mail to the registration's address (a fixed one when it has none); its
    dedupe_key is the model's default, as a real confirmation's: give one for several of a kind."""

    class Meta:
        model = Notification

    registration = factory.SubFactory(RegistrationFactory)
    kind = Notification.Kind.CONFIRMATION
    channel = Notification.Channel.EMAIL
    recipient = factory.LazyAttribute(lambda notification: notification.registration.email or "ada@example.org")
    context = factory.LazyFunction(dict)


class NotificationAttemptFactory(DjangoModelFactory[NotificationAttempt]):
    """A successful try, started now, that took 5 ms."""

    class Meta:
        model = NotificationAttempt

    notification = factory.SubFactory(NotificationFactory)
    number = factory.Sequence(lambda n: n + 1)
    started_at = factory.LazyFunction(timezone.now)
    duration_ms = 5
    outcome = NotificationAttempt.Outcome.SENT


class SuppressionFactory(DjangoModelFactory[Suppression]):
    """An active suppression of an e-mail address after a bounce (give `address` in its stored form:
    lower-cased, or E.164 with channel sms)."""

    class Meta:
        model = Suppression

    channel = Notification.Channel.EMAIL
    address = factory.Sequence(lambda n: f"gone{n}@example.org")
    reason = Suppression.Reason.BOUNCED


RENDER_CONTEXT: dict[str, Any] = {
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.org",
    "event_name": "PyData Berlin",
    "event_starts_at": "2026-12-03T08:00:00+00:00",
    "event_timezone": "Europe/Berlin",
    "event_venue": "bcc",
    "role": "attendee",
    "locale": "en",
}


def record_permanent_bounce(notification: Notification, *, diagnostic: str, details: dict[str, str]) -> None:
    """A DSN's 5.1.1 failure for the notification, recorded by notification_report_record (which
    marks it bounced and suppresses the address), as the bounce receiver records one."""
    notification_report_record(
        report=DeliveryReport(
            source="dsn",
            outcome=ReportOutcome.BOUNCED,
            permanent=True,
            status_code="5.1.1",
            diagnostic=diagnostic,
            reported_at=timezone.now(),
            details=details,
        ),
        notification_id=notification.id,
    )
