"""Reads of the registrations app: the attendee's story, everything that happened to one registration."""

from __future__ import annotations

import datetime as dt
import json
import uuid
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from apps.notifications.models import Notification
from apps.notifications.selectors import notifications_of_registration
from apps.registrations.models import FailedApply, Registration, RegistrationEvent
from apps.webhooks.models import WebhookEvent

RAW_BODY_LIMIT = 4000


@dataclass(frozen=True)
class StoryEntry:
    """One line of the story: what happened when, with the error code (if any) support looks up."""

    at: dt.datetime
    source: str  # delivery, event, failed_apply, notification, attempt, report, replay
    title: str
    status: str = ""
    error_code: str = ""
    message: str = ""
    details: list[tuple[str, str]] = field(default_factory=list)
    body: str = ""
    notification_id: str = ""


@dataclass(frozen=True)
class RegistrationStory:
    registration: Registration
    timezone: dt.tzinfo
    entries: list[StoryEntry]
    notifications: list[Any]
    deliveries: int


def _zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def event_local_time(at: dt.datetime | None, timezone_name: str) -> str:
    """`2026-12-03 09:00 (Europe/Berlin)`: an event time as the attendee reads it in their e-mail."""
    if at is None:
        return "-"
    return f"{at.astimezone(_zone(timezone_name)):%Y-%m-%d %H:%M} ({timezone_name})"


def _raw_body(raw: bytes | memoryview | None) -> str:
    """The delivery as the portal sent it, decoded leniently and cut at RAW_BODY_LIMIT characters.

    Shown to staff unmasked (they need to read the attendee's data), always HTML-escaped by the template.
    """
    data = bytes(raw or b"")
    text = data.decode("utf-8", errors="replace")
    if len(text) > RAW_BODY_LIMIT:
        return f"{text[:RAW_BODY_LIMIT]}\n… (cut; {len(data)} bytes in all)"
    return text


def webhook_events_of_registration(registration: Registration) -> list[WebhookEvent]:
    """Every delivery about this registration: the applied ones through its event log (by primary
    key), and any other (rejected, or accepted but not applied) by portal and the payload's
    `data.registration_id`. Two queries, not one OR, so the first stays an index lookup; the second
    needs an index on (portal_id, (payload #> '{data,registration_id}')) to stay fast at a million
    events (webhook_event_payload_reg_idx, migration webhooks 0006; docs/performance.md has the figures).
    """
    applied_ids = list(
        RegistrationEvent.objects.filter(registration=registration).values_list("webhook_event_id", flat=True)
    )
    applied = list(WebhookEvent.objects.filter(id__in=applied_ids))
    others = list(
        WebhookEvent.objects.filter(
            portal_id=registration.portal_id, payload__data__registration_id=registration.external_id
        ).exclude(id__in=applied_ids)
    )
    return sorted(applied + others, key=lambda event: event.received_at)


def registration_story(*, registration: Registration) -> RegistrationStory:
    """Everything that happened to one registration, oldest first: deliveries (accepted or rejected,
    with their raw body and field errors), the event log, failed applies, and each notification with
    its attempts, delivery reports and replays. Reads only; a few queries per registration, none per row."""
    entries: list[StoryEntry] = []
    deliveries = webhook_events_of_registration(registration)
    for event in deliveries:
        rejected = event.status == WebhookEvent.Status.REJECTED
        entries.append(
            StoryEntry(
                at=event.received_at,
                source="delivery",
                title=f"Webhook delivery {event.delivery_id} ({event.type})",
                status=event.status,
                error_code="invalid_payload" if rejected else "",
                message=json.dumps(event.errors, indent=1, ensure_ascii=False) if event.errors else "",
                details=[("event id", str(event.id)), ("portal", registration.portal.slug)],
                body=_raw_body(event.raw_body),
            )
        )
    for domain_event in RegistrationEvent.objects.filter(registration=registration).order_by("version"):
        entries.append(
            StoryEntry(
                at=domain_event.recorded_at,
                source="event",
                title=f"Applied: {domain_event.type} (version {domain_event.version})",
                details=[
                    ("portal's timestamp", domain_event.occurred_at.isoformat()),
                    ("from event", str(domain_event.webhook_event_id)),
                ],
            )
        )
    for failed in FailedApply.objects.filter(webhook_event__in=[event.id for event in deliveries]):
        entries.append(
            StoryEntry(
                at=failed.last_failed_at,
                source="failed_apply",
                title=f"Apply failed for event {failed.webhook_event_id}",
                status="resolved" if failed.resolved_at else "unresolved",
                error_code=failed.error_code,
                message=failed.error_message,
                details=[("attempts", str(failed.attempts))],
            )
        )
    notifications = notifications_of_registration(registration_id=registration.pk)
    for notification in notifications:
        label = f"{notification.kind}/{notification.channel}"
        entries.append(
            StoryEntry(
                # What was true then (decided, to be sent): the current status is in the notifications
                # table above, and the rows below say how it got there.
                at=notification.created_at,
                source="notification",
                title=f"Notification {label} decided",
                status="created",
                notification_id=str(notification.id),
                details=[("recipient", notification.recipient), ("attempts", str(notification.attempts))],
            )
        )
        for attempt in notification.attempt_log.all():
            entries.append(
                StoryEntry(
                    at=attempt.started_at,
                    source="attempt",
                    title=f"{label}: attempt {attempt.number}",
                    status=attempt.outcome,
                    error_code=attempt.error_code,
                    message=attempt.error_message,
                    notification_id=str(notification.id),
                    details=[("provider", attempt.provider or "-"), ("duration", f"{attempt.duration_ms} ms")]
                    + ([("provider message id", attempt.provider_message_id)] if attempt.provider_message_id else []),
                )
            )
        for report in notification.reports.all():
            # What the mail system or carrier said after `sent` (delivery.py); the remote status code
            # (5.1.1, 30005) is theirs, not one of our catalogue's, so it is a detail, not a link.
            entries.append(
                StoryEntry(
                    at=report.received_at,
                    source="report",
                    title=f"{label}: {report.outcome} reported ({report.source})",
                    status=report.outcome if report.applied else f"{report.outcome} (waiting for sent)",
                    message=report.diagnostic,
                    notification_id=str(notification.id),
                    details=[(key, str(value)) for key, value in report.details.items()]
                    + ([("status code", report.status_code)] if report.status_code else [])
                    + ([("reported at", f"{report.reported_at:%Y-%m-%d %H:%M:%S %Z}")] if report.reported_at else []),
                )
            )
        for replay in notification.replays.all():
            entries.append(
                StoryEntry(
                    at=replay.replayed_at,
                    source="replay",
                    title=f"{label}: replayed by {replay.actor}",
                    status=f"was {replay.previous_status}",
                    error_code=replay.previous_error_code,
                    message=replay.reason,
                    notification_id=str(notification.id),
                )
            )
    entries.sort(key=lambda entry: entry.at)
    return RegistrationStory(
        registration=registration,
        timezone=_zone(registration.event_timezone),
        entries=entries,
        notifications=notifications,
        deliveries=len(deliveries),
    )


def registration_ids_matching(term: str) -> set[int]:
    """Registrations a support search term names exactly: a notification id, a webhook event id, or a
    portal's delivery id (a rejected delivery counts through its payload's registration_id).

    Exact matches only, on the primary keys and the delivery id, so the search stays an index lookup.
    """
    term = term.strip()
    if not term:
        return set()
    matched: set[int] = set()
    try:
        as_uuid: uuid.UUID | None = uuid.UUID(term)
    except ValueError:
        as_uuid = None
    if as_uuid is not None:
        matched.update(Notification.objects.filter(id=as_uuid).values_list("registration_id", flat=True))
    elif " " in term or "@" in term:
        return matched  # a name or an e-mail address, never an id: spare the delivery-id lookup
    # Two lookups rather than one OR, so each can use its own index (the primary key; the delivery id).
    events = list(WebhookEvent.objects.filter(delivery_id=term).values_list("id", "portal_id", "payload")[:50])
    if as_uuid is not None:
        events += WebhookEvent.objects.filter(id=as_uuid).values_list("id", "portal_id", "payload")
    for event_id, portal_id, payload in events:
        matched.update(
            RegistrationEvent.objects.filter(webhook_event_id=event_id).values_list("registration_id", flat=True)
        )
        data = payload.get("data") if isinstance(payload, dict) else None
        external_id = data.get("registration_id") if isinstance(data, dict) else None
        if isinstance(external_id, str):
            matched.update(
                Registration.objects.filter(portal_id=portal_id, external_id=external_id).values_list("id", flat=True)
            )
    return matched
