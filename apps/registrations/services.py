"""Applying webhook events to registrations (event-sourced)."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from django.db import connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.notifications.models import CLAIMABLE, Notification
from apps.notifications.services import (
    notifications_cancel_pending,
    notifications_create_missing,
    notifications_supersede,
)
from apps.registrations import projection
from apps.registrations.models import ProcessedMessage, Registration, RegistrationEvent
from apps.webhooks.models import WebhookEvent
from eventplatform import sql
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


_MARK_PROCESSED = (
    f"INSERT INTO {ProcessedMessage._meta.db_table} (message_id, processed_at) VALUES (%s, %s) "
    "ON CONFLICT (message_id) DO NOTHING RETURNING message_id"
)
_EVENT_COLUMNS = ("portal_id", "type", "status", "payload", "received_at")
# PostgreSQL: record the message id and read the event in one round trip (the LEFT JOIN answers
# even when the event does not exist).
_MARK_PROCESSED_AND_READ = (
    f"WITH processed AS ({_MARK_PROCESSED}) SELECT EXISTS (SELECT 1 FROM processed), "
    + ", ".join(f"e.{column}" for column in _EVENT_COLUMNS)
    + f" FROM (SELECT 1) AS one LEFT JOIN {WebhookEvent._meta.db_table} AS e ON e.id = %s"
)


# JSONField's own decoding of a value read by raw SQL; its `expression` argument is unused (typed as
# Any because the stubs require an expression there).
_PAYLOAD_FIELD: Any = WebhookEvent._meta.get_field("payload")


def _mark_processed_and_read(message_id: str, event_id: uuid.UUID) -> tuple[bool, dict[str, Any] | None]:
    """Record the message id (False when it was already recorded: a redelivery) and read the event."""
    now = timezone.now()
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_MARK_PROCESSED, [message_id, now])
            first = cursor.fetchone() is not None
        return first, WebhookEvent.objects.filter(id=event_id).values(*_EVENT_COLUMNS).first()
    with connection.cursor() as cursor:
        cursor.execute(_MARK_PROCESSED_AND_READ, [message_id, now, event_id])
        first, *values = cursor.fetchone()
    if values[0] is None:
        return first, None
    event = dict(zip(_EVENT_COLUMNS, values, strict=True))
    event["payload"] = _PAYLOAD_FIELD.from_db_value(event["payload"], None, connection)
    return first, event


_REGISTRATION_COLUMNS = (
    "portal_id",
    "external_id",
    "version",
    *projection.DATA_FIELDS,
    "status",
    "last_event_at",
    "created_at",
    "updated_at",
)
# Insert the registration as its first event makes it, or lock the existing row: one statement
# either way. `xmax = 0` holds only for a row this statement inserted (an updated row carries our
# transaction id), which tells the two apart without a second round trip.
_UPSERT_REGISTRATION = (
    f"INSERT INTO {Registration._meta.db_table} ({', '.join(_REGISTRATION_COLUMNS)}) "
    f"VALUES ({', '.join(['%s'] * len(_REGISTRATION_COLUMNS))}) "
    "ON CONFLICT (portal_id, external_id) DO UPDATE SET updated_at = EXCLUDED.updated_at "
    "RETURNING id, (xmax = 0) AS inserted"
)


@functools.cache
def _registration_defaults() -> dict[str, Any]:
    """The model's default for each column an event leaves unset (none of them is computed)."""
    return {field.attname: field.get_default() for field in Registration._meta.concrete_fields}


def _insert_or_lock_registration(*, portal_id: int, external_id: str, first_state: dict[str, Any]) -> tuple[int, bool]:
    """Create the registration with the state its first event gives, or lock the existing row;
    returns (id, created).

    The row lock (taken by the insert and by `ON CONFLICT DO UPDATE` alike) serialises every writer
    of this registration until COMMIT; the unique version is the safety net. A new registration's
    log is this one event, so its projection is already right and needs no read nor update.
    """
    now = timezone.now()
    fields = {**_registration_defaults(), **_projection_fields(first_state)}
    values = [portal_id, external_id, 1, *(fields[name] for name in _REGISTRATION_COLUMNS[3:-2]), now, now]
    if connection.vendor != "postgresql":
        return _insert_or_lock_portable(portal_id=portal_id, external_id=external_id, values=values)
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT_REGISTRATION, values)
        registration_id, created = cursor.fetchone()
    return registration_id, created


def _insert_or_lock_portable(*, portal_id: int, external_id: str, values: list[Any]) -> tuple[int, bool]:
    """SQLite (embedded mode): the database is locked for writing by the transaction already."""
    existing = Registration.objects.filter(portal_id=portal_id, external_id=external_id).values_list("pk", flat=True)
    if existing:
        return existing[0], False
    registration = Registration.objects.create(**dict(zip(_REGISTRATION_COLUMNS, values, strict=True)))
    return registration.pk, True


def _projection_fields(state: dict[str, Any]) -> dict[str, Any]:
    fields = {field: state[field] or "" for field in projection.DATA_FIELDS if field in state}
    if "event_starts_at" in fields:
        fields["event_starts_at"] = parse_datetime(fields["event_starts_at"]) if fields["event_starts_at"] else None
    return {**fields, "status": state["status"], "last_event_at": parse_datetime(state["last_event_at"])}


_WAITING = CLAIMABLE  # a notification not yet handed to a provider


def _without_restated_update(
    wanted: list[tuple[str, str, dict[str, Any]]], existing: list[tuple[str, str, str, str, Any]]
) -> list[tuple[str, str, dict[str, Any]]]:
    """The wanted notifications without a new update that would say what the attendee was told
    already: a change back before the first update went out, or an older update that arrived late
    and moved the last visible change to another event.

    "Told": the last update that went out or is going (`sending` and later), else the confirmation
    (unless cancelled). Updates still waiting (`pending`, `retrying`) do not count: the apply
    supersedes them whatever it decides. A told update wins over a confirmation created after it
    (its `created` event arrived last): the updates are the story of changes, and the last of them
    must state the final state. `existing` is (kind, channel, dedupe_key, status, context) in
    creation order."""
    updates = [
        context
        for kind, _, _, status, context in existing
        if kind == Notification.Kind.UPDATE and status not in (*_WAITING, Notification.Status.CANCELLED)
    ]
    told = updates or [
        context
        for kind, _, _, status, context in existing
        if kind == Notification.Kind.CONFIRMATION and status != Notification.Status.CANCELLED
    ]
    if not told:
        return wanted
    last_told = projection.visible_digest(told[-1])
    known = {(kind, key) for kind, _, key, _, _ in existing}
    return [
        (kind, key, state)
        for kind, key, state in wanted
        if kind != Notification.Kind.UPDATE or (kind, key) in known or projection.visible_digest(state) != last_told
    ]


def _update_keys_renewed(
    wanted: list[tuple[str, str, dict[str, Any]]], existing: list[tuple[str, str, str, str, Any]]
) -> list[tuple[str, str, dict[str, Any]]]:
    """The wanted update under a key it can still be created with. Late deliveries can make an
    event the last visible change, then not (an older one arrives), then again (one between
    them arrives); its update was superseded (`cancelled`) in between and must be created anew:
    `<key>/2`, `<key>/3`... A live (not cancelled) row of the family is the one wanted."""
    taken = {key: status for kind, _, key, status, _ in existing if kind == Notification.Kind.UPDATE}
    renewed = []
    for kind, key, state in wanted:
        if kind == Notification.Kind.UPDATE:
            family = [key, *(f"{key}/{number}" for number in range(2, len(taken) + 3))]
            key = next(candidate for candidate in family if taken.get(candidate, "") != Notification.Status.CANCELLED)
        renewed.append((kind, key, state))
    return renewed


def _stale_updates(
    wanted: list[tuple[str, str, dict[str, Any]]], existing: list[tuple[str, str, str, str, Any]]
) -> bool:
    """Whether an update still waiting to be sent is not the one the log wants now (so must be superseded)."""
    keep = {key for kind, key, _ in wanted if kind == Notification.Kind.UPDATE}
    return any(
        kind == Notification.Kind.UPDATE and status in _WAITING and key not in keep
        for kind, _, key, status, _ in existing
    )


@transaction.atomic
def registration_apply(*, event_id: str, message_id: str, send_at_once: bool = False) -> ApplyResult:
    """Append the webhook event to its registration's log, refresh the projection, and queue the
    notifications the log now calls for, all in one transaction.

    The message id is recorded in the same transaction: a redelivered message (the relay may
    publish a row twice if it dies between the broker's confirm and its own COMMIT) changes
    nothing. If this process dies before COMMIT, nothing happened and RabbitMQ redelivers.
    `send_at_once`: the caller (the apply actor) sends the new notifications itself right after
    COMMIT; their outbox rows wait NOTIFICATION_SEND_AT_ONCE_GRACE_SECONDS as the safety net
    (apps/notifications/send_at_once.py).

    This is the workers' hottest path. A new registration (the common case: a `created` delivery)
    costs five statements: the message id with the event read, the registration insert, its log
    entry, the notifications and their outbox rows; an existing one adds the log read, the
    projection update and the notifications read.
    """
    try:
        event_uuid = uuid.UUID(str(event_id))
    except ValueError:
        raise EventNotFound(f"Webhook event {event_id} does not exist.") from None
    first_delivery, webhook_event = _mark_processed_and_read(message_id, event_uuid)
    if not first_delivery:
        return ApplyResult(outcome="duplicate_message")
    if webhook_event is None:
        raise EventNotFound(f"Webhook event {event_id} does not exist.")
    webhook_event["id"] = event_uuid
    if webhook_event["status"] != WebhookEvent.Status.ACCEPTED:
        return ApplyResult(outcome="not_accepted")
    payload = webhook_event["payload"]
    event_type = EVENT_TYPE_BY_WEBHOOK_TYPE[webhook_event["type"]]
    occurred_at = parse_datetime(_utc_iso(payload["timestamp"]))
    assert occurred_at is not None, "the timestamp was validated when the webhook was received"
    data = projection.flatten_payload(payload["data"])
    first = projection.DomainEvent(type=event_type, occurred_at=occurred_at.isoformat(), data=data)
    registration_id, created_now = _insert_or_lock_registration(
        portal_id=webhook_event["portal_id"],
        external_id=payload["data"]["registration_id"],
        first_state=projection.fold([first]) or {},
    )
    logged = (
        []
        if created_now
        else list(
            RegistrationEvent.objects.filter(registration_id=registration_id).values_list(
                "type", "occurred_at", "data", "webhook_event_id"
            )
        )
    )
    if any(row[3] == webhook_event["id"] for row in logged):
        return ApplyResult(outcome="already_applied", registration_id=registration_id)

    sql.insert(
        RegistrationEvent(
            registration_id=registration_id,
            version=len(logged) + 1,
            type=event_type,
            occurred_at=occurred_at,
            data=data,
            webhook_event_id=webhook_event["id"],
        )
    )
    events = [projection.DomainEvent(type=t, occurred_at=at.isoformat(), data=data) for t, at, data, _ in logged]
    events.append(first)
    state = projection.fold(events)
    assert state is not None
    if not created_now:
        Registration.objects.filter(pk=registration_id).update(
            **_projection_fields(state), version=len(events), updated_at=timezone.now()
        )
    existing = (
        []
        if created_now
        else list(
            Notification.objects.filter(registration_id=registration_id)
            .order_by("created_at")
            .values_list("kind", "channel", "dedupe_key", "status", "context")
        )
    )
    wanted = _without_restated_update(
        _update_keys_renewed(projection.desired_notifications(events), existing), existing
    )
    created = notifications_create_missing(
        registration_id=registration_id,
        wanted=wanted,
        correlation_id=str(webhook_event["id"]),
        source_received_at=webhook_event["received_at"],
        known_none=created_now,
        existing={(kind, channel, key) for kind, channel, key, _, _ in existing},
        send_at_once=send_at_once,
    )
    if _stale_updates(wanted, existing):
        notifications_supersede(
            registration_id=registration_id,
            kind=Notification.Kind.UPDATE,
            keep=[key for kind, key, _ in wanted if kind == Notification.Kind.UPDATE],
        )
    if state["status"] == Registration.Status.CANCELLED and not created_now:
        notifications_cancel_pending(registration=registration_id, kinds=REMINDER_KINDS)
    log.info(
        "registration.applied",
        registration=payload["data"]["registration_id"],
        version=len(events),
        type=webhook_event["type"],
        notifications=len(created),
    )
    return ApplyResult(
        outcome="applied", registration_id=registration_id, notification_ids=tuple(n.id for n in created)
    )


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
    return {
        field: (getattr(registration, field), value)
        for field, value in expected.items()
        if getattr(registration, field) != value
    }
