"""Rows of the notifications app for tests: `NotificationFactory(registration=..., status=...)`,
`NotificationAttemptFactory(notification=..., outcome=...)`, `SuppressionFactory(address=...)`."""

from __future__ import annotations

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

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
