"""Data that ages out: the daily retention job (issue 10 part 6).

Deletes what only mattered for a while — published outbox rows, processed-message ids, rate-limit
windows — and blanks the raw bodies and payloads of applied webhook events past their retention
(the registration's own event log keeps what the projection needs; the event row stays, so a
repeated delivery id is still recognised). Each batch is its own short transaction: nothing holds
a lock on a busy table for long, and if the process dies mid-run the finished batches stay done
and the next run carries on. Safe to run twice or concurrently: every step is idempotent.
"""

from __future__ import annotations

import datetime as dt

import structlog
from django.conf import settings
from django.db.models import Model, QuerySet

from apps.outbox.models import OutboxMessage
from apps.registrations.models import ProcessedMessage
from apps.webhooks.models import RateWindow, WebhookEvent
from apps.webhooks.redaction import Redaction, redacted_payload, webhook_events_redact

log = structlog.get_logger(__name__)


def _delete_in_batches(queryset: QuerySet[Model], *, batch_size: int) -> int:
    model = queryset.model
    deleted = 0
    while True:
        ids = list(queryset.values_list("pk", flat=True)[:batch_size])
        if not ids:
            return deleted
        count, _ = model.objects.filter(pk__in=ids).delete()
        deleted += count


def _redact_applied_events(*, received_before: dt.datetime, batch_size: int) -> int:
    """Only applied events: an accepted event not applied yet (or waiting as a FailedApply) still
    needs its payload to be applied; a rejected one is what staff look at to help the portal."""
    pending = (
        WebhookEvent.objects.filter(received_at__lt=received_before, registration_event__isnull=False)
        .exclude(payload__has_key="redacted")
        .order_by("received_at")
    )
    redacted = 0
    while True:
        batch = list(pending.values_list("id", "payload")[:batch_size])
        if not batch:
            return redacted
        redacted += webhook_events_redact(
            redactions=[
                Redaction(event_id=event_id, payload=redacted_payload(payload, reason="retention"))
                for event_id, payload in batch
            ]
        )


def data_retention_run(*, now: dt.datetime) -> dict[str, int]:
    """Apply every retention setting (RETENTION_*; 0 keeps that kind forever) as of `now`.

    Returns how many rows each step deleted or redacted, e.g. for the scheduler's heartbeat.
    """
    batch_size = settings.RETENTION_BATCH_SIZE

    def cutoff(days: int) -> dt.datetime | None:
        return now - dt.timedelta(days=days) if days > 0 else None

    result = {
        "outbox_published_deleted": 0,
        "processed_messages_deleted": 0,
        "rate_windows_deleted": 0,
        "event_bodies_redacted": 0,
    }
    if (before := cutoff(settings.RETENTION_OUTBOX_PUBLISHED_DAYS)) is not None:
        result["outbox_published_deleted"] = _delete_in_batches(
            OutboxMessage.objects.filter(published_at__lt=before), batch_size=batch_size
        )
    if (before := cutoff(settings.RETENTION_PROCESSED_MESSAGES_DAYS)) is not None:
        result["processed_messages_deleted"] = _delete_in_batches(
            ProcessedMessage.objects.filter(processed_at__lt=before), batch_size=batch_size
        )
    if (before := cutoff(settings.RETENTION_RATE_WINDOWS_DAYS)) is not None:
        result["rate_windows_deleted"] = _delete_in_batches(
            RateWindow.objects.filter(window_start__lt=before), batch_size=batch_size
        )
    if (before := cutoff(settings.RETENTION_EVENT_BODIES_DAYS)) is not None:
        result["event_bodies_redacted"] = _redact_applied_events(received_before=before, batch_size=batch_size)
    log.info("retention.done", **result)
    return result
