"""Applying webhook events to registrations (event-sourced)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.notifications.services import notifications_cancel_pending, notifications_create_missing
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


def _mark_processed(message_id: str) -> bool:
    """Record the message id; False when it was already recorded (a redelivery)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {ProcessedMessage._meta.db_table} (message_id, processed_at) VALUES (%s, %s) "
            "ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
            [message_id, timezone.now()],
        )
        return cursor.fetchone() is not None


def _lock_registration(*, portal_id: int, external_id: str) -> int:
    """Create the registration if needed and lock its row; return its id.

    One `INSERT … ON CONFLICT DO UPDATE`: it takes the row lock in both cases, which serialises
    every writer of this registration until COMMIT (the unique version is the safety net).
    """
    [registration] = Registration.objects.bulk_create(
        [Registration(portal_id=portal_id, external_id=external_id)],
        update_conflicts=True, unique_fields=["portal", "external_id"], update_fields=["updated_at"],
    )
    return registration.pk


def _projection_fields(state: dict[str, Any]) -> dict[str, Any]:
    fields = {field: state[field] or "" for field in projection.DATA_FIELDS if field in state}
    if "event_starts_at" in fields:
        fields["event_starts_at"] = parse_datetime(fields["event_starts_at"]) if fields["event_starts_at"] else None
    return {**fields, "status": state["status"], "last_event_at": parse_datetime(state["last_event_at"])}


@transaction.atomic
def registration_apply(*, event_id: str, message_id: str) -> ApplyResult:
    """Append the webhook event to its registration's log, refresh the projection, and queue the
    notifications the log now calls for, all in one transaction.

    The message id is recorded in the same transaction: a redelivered message (the relay may
    publish a row twice if it dies between the broker's confirm and its own COMMIT) changes
    nothing. If this process dies before COMMIT, nothing happened and RabbitMQ redelivers.
    This is the workers' hottest path: about ten statements, none of them repeated per field.
    """
    if not _mark_processed(message_id):
        return ApplyResult(outcome="duplicate_message")
    webhook_event = (WebhookEvent.objects.filter(id=event_id)
                     .values("id", "portal_id", "type", "status", "payload", "received_at").first())
    if webhook_event is None:
        raise EventNotFound(f"Webhook event {event_id} does not exist.")
    if webhook_event["status"] != WebhookEvent.Status.ACCEPTED:
        return ApplyResult(outcome="not_accepted")
    payload = webhook_event["payload"]
    registration_id = _lock_registration(portal_id=webhook_event["portal_id"],
                                         external_id=payload["data"]["registration_id"])
    logged = list(RegistrationEvent.objects.filter(registration_id=registration_id)
                  .values_list("type", "occurred_at", "data", "webhook_event_id"))
    if any(row[3] == webhook_event["id"] for row in logged):
        return ApplyResult(outcome="already_applied", registration_id=registration_id)

    new_event = RegistrationEvent.objects.create(
        registration_id=registration_id, version=len(logged) + 1,
        type=EVENT_TYPE_BY_WEBHOOK_TYPE[webhook_event["type"]],
        occurred_at=parse_datetime(_utc_iso(payload["timestamp"])),
        data=projection.flatten_payload(payload["data"]), webhook_event_id=webhook_event["id"],
    )
    events = [projection.DomainEvent(type=t, occurred_at=at.isoformat(), data=data) for t, at, data, _ in logged]
    events.append(_domain_event(new_event))
    state = projection.fold(events)
    assert state is not None
    Registration.objects.filter(pk=registration_id).update(
        **_projection_fields(state), version=len(events), updated_at=timezone.now()
    )
    created = notifications_create_missing(
        registration_id=registration_id, wanted=list(projection.desired_notifications(events)),
        correlation_id=str(webhook_event["id"]),
        source_received_at=webhook_event["received_at"],
    )
    if state["status"] == Registration.Status.CANCELLED:
        notifications_cancel_pending(registration=registration_id, kinds=REMINDER_KINDS)
    log.info("registration.applied", registration=payload["data"]["registration_id"], version=len(events),
             type=webhook_event["type"], notifications=len(created))
    return ApplyResult(outcome="applied", registration_id=registration_id,
                       notification_ids=tuple(n.id for n in created))


@transaction.atomic
def registration_rebuild(*, registration: Registration) -> Registration:
    """Recompute the projection from the event log (the log is the truth)."""
    registration = Registration.objects.select_for_update().get(pk=registration.pk)
    events = list(registration.events.all())
    state = projection.fold(_domain_event(e) for e in events)
    fields = _projection_fields(state) if state is not None else {}
    Registration.objects.filter(pk=registration.pk).update(**fields, version=len(events), updated_at=timezone.now())
    registration.refresh_from_db()
    return registration


def registration_drift(*, registration: Registration) -> dict[str, tuple[Any, Any]]:
    """Fields whose stored value differs from the one folded from the event log: name -> (stored,
    from events). Empty when the projection is right. Reads only (`rebuild_registrations --verify`)."""
    events = list(registration.events.all())
    state = projection.fold(_domain_event(e) for e in events)
    expected: dict[str, Any] = {**(_projection_fields(state) if state is not None else {}), "version": len(events)}
    return {field: (getattr(registration, field), value) for field, value in expected.items()
            if getattr(registration, field) != value}
