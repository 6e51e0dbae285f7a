"""Actors of the registrations app: load by id, call one service.

Retry policy of `webhook_event_apply`: errors a retry can fix (PostgreSQL down, a lock timeout: any
database error) are retried by Dramatiq's Retries middleware up to APPLY_MAX_RETRIES times (read
when a retry is decided), with backoffs bounded by 5 minutes (eventplatform.broker.MAX_BACKOFF_MS:
Dramatiq holds a delayed message unacknowledged until it is due, and RabbitMQ closes a channel
holding one longer than its consumer_timeout). When they run out, `webhook_event_dead_letter` records a
FailedApply. Errors no retry can fix (the event does not exist, a bug) are recorded at once.
"""

from __future__ import annotations

import traceback
from typing import Any

import dramatiq
from django.conf import settings
from dramatiq.middleware import CurrentMessage

from apps.notifications.checks import send_time_limit_ms
from apps.notifications.send_at_once import notifications_send_at_once
from apps.registrations.failures import REAPPLY_OPTION, failed_apply_record, failed_apply_resolve
from apps.registrations.services import EventNotFound, registration_apply
from apps.webhooks.apply_actor import APPLY_ACTOR
from eventplatform import metrics
from eventplatform.broker import MAX_BACKOFF_MS

# Deterministic errors of our own code or data: retrying the same message cannot make them pass.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (LookupError, TypeError, ValueError, AttributeError, AssertionError)


def apply_retry_when(retries_so_far: int, exception: BaseException) -> bool:
    """Retry up to the configured count (read now, not at import: tests and operators shrink it)."""
    return retries_so_far < settings.APPLY_MAX_RETRIES


def _last_line(traceback_text: str) -> str:
    lines = [line for line in traceback_text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


@dramatiq.actor(
    queue_name=APPLY_ACTOR["queue_name"],
    actor_name="webhook_event_dead_letter",
    max_retries=10,
    min_backoff=1000,
    max_backoff=60_000,
)
def webhook_event_dead_letter(message_data: dict[str, Any], retry_info: dict[str, Any] | None = None) -> None:
    """Called by the Retries middleware (`on_retry_exhausted`) when an apply will not be retried:
    records it as a FailedApply, with the last error and the tries made.

    The hand-off is published straight to RabbitMQ, not through the outbox: if it is lost, or this
    actor's own retries run out, the event has neither a registration event nor a FailedApply, and
    the sweeper re-enqueues it.
    """
    options = message_data.get("options", {})
    event_id = message_data.get("kwargs", {}).get("event_id") or message_data["args"][0]
    retries = (retry_info or {}).get("retries", options.get("retries", 1) - 1)
    traceback_text = options.get("traceback", "")
    failed_apply_record(
        event_id=event_id,
        error_code="apply_retries_exhausted",
        error_message=f"{_last_line(traceback_text)}\n\n{traceback_text}".strip(),
        attempts=retries + 1,
    )


@dramatiq.actor(
    queue_name=APPLY_ACTOR["queue_name"],
    actor_name=APPLY_ACTOR["actor_name"],
    retry_when=apply_retry_when,
    min_backoff=settings.APPLY_MIN_BACKOFF_MS,
    max_backoff=min(settings.APPLY_MAX_BACKOFF_MS, MAX_BACKOFF_MS),
    # it sends what it created (send_at_once.py), one message per channel at most: Dramatiq's
    # TimeLimit must not interrupt a send (apps/notifications/checks.py)
    time_limit=2 * send_time_limit_ms(),
    on_retry_exhausted=webhook_event_dead_letter.actor_name,
)
def webhook_event_apply(event_id: str) -> None:
    message = CurrentMessage.get_current_message()
    attempts = (message.options.get("retries", 0) if message else 0) + 1
    try:
        result = registration_apply(
            event_id=event_id,
            message_id=message.message_id if message else event_id,
            send_at_once=settings.NOTIFICATION_SEND_AT_ONCE,
        )
    except EventNotFound as error:
        failed_apply_record(event_id=event_id, error_code=error.code, error_message=error.message, attempts=attempts)
        return
    except PERMANENT_ERRORS as error:
        # registration_apply rolled back; the message is acknowledged: the FailedApply is its record.
        failed_apply_record(
            event_id=event_id,
            error_code="apply_error",
            attempts=attempts,
            error_message=f"{type(error).__name__}: {error}\n\n{traceback.format_exc(limit=20)}",
        )
        return
    # Only a re-apply can meet an unresolved FailedApply; without a message (called directly) we cannot
    # tell, so look. The hot path of every other apply is spared the UPDATE.
    if result.outcome in ("applied", "already_applied") and (message is None or message.options.get(REAPPLY_OPTION)):
        failed_apply_resolve(event_id=event_id)
    metrics.REGISTRATION_EVENTS.labels(type="webhook", outcome=result.outcome).inc()
    if settings.NOTIFICATION_SEND_AT_ONCE:
        # After COMMIT, and only now: the notifications exist and their outbox rows are the safety net.
        notifications_send_at_once(notification_ids=result.notification_ids)
