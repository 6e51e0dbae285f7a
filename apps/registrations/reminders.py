"""Creating reminder notifications for events about to start (the `send_reminders` command).

Windows, with B24 = REMINDER_24H_BEFORE_SECONDS and B1 = REMINDER_1H_BEFORE_SECONDS:
reminder_24h for events starting in (now + B1, now + B24], reminder_1h for (now, now + B1].
Run it every few minutes (cron, systemd timer); a run that finds nothing new does nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from apps.notifications.channels import channels_for
from apps.notifications.models import Notification
from apps.notifications.services import notification_create
from apps.registrations import projection
from apps.registrations.models import Registration
from apps.webhooks import senders


def reminder_windows(now: dt.datetime) -> dict[str, tuple[dt.datetime, dt.datetime]]:
    """kind -> (start exclusive, end inclusive) of `event_starts_at`."""
    one_hour = now + dt.timedelta(seconds=settings.REMINDER_1H_BEFORE_SECONDS)
    one_day = now + dt.timedelta(seconds=settings.REMINDER_24H_BEFORE_SECONDS)
    return {Notification.Kind.REMINDER_24H: (one_hour, one_day), Notification.Kind.REMINDER_1H: (now, one_hour)}


def _context(registration: Registration) -> dict[str, Any]:
    """The same shape as the registration's folded state, which other notifications carry."""
    context = {field: getattr(registration, field) for field in projection.DATA_FIELDS}
    context["event_starts_at"] = registration.event_starts_at.isoformat() if registration.event_starts_at else ""
    context["status"] = registration.status
    # The portal's sender and default locale, as registration_apply gives every notification.
    portal = registration.portal
    context.update(
        senders.notification_context({column: getattr(portal, column) for column in senders.NOTIFICATION_CONTEXT_KEYS})
    )
    return context


@transaction.atomic
def _remind(*, registration_id: int, kind: str, start: dt.datetime, end: dt.datetime) -> list[Notification]:
    """One registration, one transaction: the row lock orders this against registration_apply, so a
    cancellation either comes first (no reminder) or cancels the reminder just created."""
    registration = (
        Registration.objects.select_related("portal")
        .select_for_update(of=("self",))
        .filter(
            id=registration_id,
            status=Registration.Status.ACTIVE,
            event_starts_at__gt=start,
            event_starts_at__lte=end,
        )
        .first()
    )
    if registration is None:
        return []
    context = _context(registration)
    created = []
    for channel in channels_for(kind, context):
        notification = notification_create(registration=registration, kind=kind, channel=channel, context=context)
        if notification is not None:
            created.append(notification)
    return created


def reminders_create(*, now: dt.datetime | None = None) -> dict[str, list[Notification]]:
    """Create the reminders that are due and not yet created; returns the new ones per kind.

    Idempotent and safe to run concurrently: the notification's unique constraint makes a second
    creation of the same (registration, kind, channel) a no-op, whichever run gets there first.
    """
    now = now or timezone.now()
    created: dict[str, list[Notification]] = {}
    for kind, (start, end) in reminder_windows(now).items():
        already = Notification.objects.filter(registration=OuterRef("pk"), kind=kind)
        due = (
            Registration.objects.filter(
                status=Registration.Status.ACTIVE, event_starts_at__gt=start, event_starts_at__lte=end
            )
            .filter(~Exists(already))
            .order_by("event_starts_at")
            .values_list("id", flat=True)
        )
        created[kind] = [
            n
            for registration_id in list(due)
            for n in _remind(registration_id=registration_id, kind=kind, start=start, end=end)
        ]
    return created
