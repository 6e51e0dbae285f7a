"""Applying webhook events to registrations (event-sourced)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.notifications.services import notification_create, notifications_cancel_pending
from apps.registrations import projection
from apps.registrations.models import ProcessedMessage, Registration, RegistrationEvent
from apps.webhooks.models import WebhookEvent
from eventplatform.errors import EventPlatformError

log = structlog.get_logger("registrations")

EVENT_TYPE_BY_WEBHOOK_TYPE = {
    "registration.created": RegistrationEvent.Type.CREATED,
    "registration.updated": RegistrationEvent.Type.UPDATED,
    "registration.cancelled": RegistrationEvent.Type.CANCELLED,
}
REMINDER_KINDS = ("reminder_24h", "reminder_1h")


class EventNotFound(EventPlatformError):
    """The message names a webhook event that does not exist."""

    code = "event_not_found"


@dataclass(frozen=True)
class ApplyResult:
    outcome: str  # applied | duplicate_message | already_applied | not_accepted
    registration_id: int | None = None
    notification_ids: tuple[uuid.UUID, ...] = ()


def _utc_iso(value: str) -> str:
    parsed = parse_datetime(value)
    if parsed is None:
        return value
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, dt.UTC)
    return parsed.astimezone(dt.UTC).isoformat()


def _domain_event(event: RegistrationEvent) -> projection.DomainEvent:
    return projection.DomainEvent(type=event.type, occurred_at=event.occurred_at.isoformat(), data=event.data)


def _project(registration: Registration, state: dict[str, Any]) -> None:
    for field in projection.DATA_FIELDS:
        if field in state:
            value = state[field]
            if field == "event_starts_at":
                setattr(registration, field, parse_datetime(value) if value else None)
            else:
                setattr(registration, field, value or "")
    registration.status = state["status"]
    registration.last_event_at = parse_datetime(state["last_event_at"])


def _channels(kind: str, state: dict[str, Any]) -> list[str]:
    """Channels with a recipient. A cancellation seen before its registration's data has none yet;
    the notifications are recomputed from the whole log on every event, so it is created as soon
    as an event brings the address."""
    channels = ["email"] if state.get("email") else []
    if kind in ("confirmation", "cancellation", "reminder_1h") and state.get("phone") and settings.SMS_API_URL:
        channels.append("sms")
    return channels


@transaction.atomic
def registration_apply(*, event_id: str, message_id: str) -> ApplyResult:
    """Append the webhook event to its registration's log, refresh the projection, and queue the
    notifications the log now calls for, all in one transaction.

    The message id is recorded in the same transaction: a redelivered message (the relay may
    publish a row twice if it dies between the broker's confirm and its own COMMIT) changes
    nothing. If this process dies before COMMIT, nothing happened and RabbitMQ redelivers.
    """
    _, new = ProcessedMessage.objects.get_or_create(message_id=message_id)
    if not new:
        return ApplyResult(outcome="duplicate_message")
    try:
        webhook_event = WebhookEvent.objects.select_related("portal").defer("raw_body").get(id=event_id)
    except WebhookEvent.DoesNotExist:
        raise EventNotFound(f"Webhook event {event_id} does not exist.") from None
    if webhook_event.status != WebhookEvent.Status.ACCEPTED:
        return ApplyResult(outcome="not_accepted")
    data = webhook_event.payload["data"]
    Registration.objects.get_or_create(portal=webhook_event.portal, external_id=data["registration_id"])
    # The row lock serialises every writer of this registration; the unique version is the
    # safety net should anything bypass it.
    registration = Registration.objects.select_for_update().get(
        portal=webhook_event.portal, external_id=data["registration_id"]
    )
    if RegistrationEvent.objects.filter(webhook_event=webhook_event).exists():
        return ApplyResult(outcome="already_applied", registration_id=registration.pk)

    RegistrationEvent.objects.create(
        registration=registration,
        version=registration.version + 1,
        type=EVENT_TYPE_BY_WEBHOOK_TYPE[webhook_event.type],
        occurred_at=parse_datetime(_utc_iso(webhook_event.payload["timestamp"])),
        data=projection.flatten_payload(data),
        webhook_event=webhook_event,
    )
    events = [_domain_event(e) for e in registration.events.all()]
    state = projection.fold(events)
    assert state is not None
    _project(registration, state)
    registration.version += 1
    registration.save()

    created: list[uuid.UUID] = []
    for kind, dedupe_key, state_then in projection.desired_notifications(events):
        for channel in _channels(kind, state_then):
            notification = notification_create(
                registration=registration, kind=kind, channel=channel, dedupe_key=dedupe_key, context=state_then,
                correlation_id=str(webhook_event.id), source_received_at=webhook_event.received_at,
            )
            if notification is not None:
                created.append(notification.id)
    if state["status"] == Registration.Status.CANCELLED:
        notifications_cancel_pending(registration=registration, kinds=REMINDER_KINDS)
    log.info("registration.applied", registration=registration.external_id, version=registration.version,
             type=webhook_event.type, notifications=len(created))
    return ApplyResult(outcome="applied", registration_id=registration.pk, notification_ids=tuple(created))


@transaction.atomic
def registration_rebuild(*, registration: Registration) -> Registration:
    """Recompute the projection from the event log (the log is the truth)."""
    registration = Registration.objects.select_for_update().get(pk=registration.pk)
    events = list(registration.events.all())
    state = projection.fold(_domain_event(e) for e in events)
    if state is not None:
        _project(registration, state)
    registration.version = len(events)
    registration.save()
    return registration
