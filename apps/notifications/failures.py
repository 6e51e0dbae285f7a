"""When a send does not end `sent`: the one path to `dead`, and retry rounds after Dramatiq's
retries ran out.

Every notification ends `sent`, `dead` or `cancelled`; this module owns the ways it gets there
other than a successful send (sending.py):
- message_temporary / provider_down: `retrying`, Dramatiq retries with short backoffs; when those
  run out, a new round through the outbox while younger than the horizon, else dead
  (notification_retries_exhausted);
- message_permanent: dead at once (notification_mark_dead, called by sending.py);
- every breaker of the channel open or misconfigured: the send waits for it (deferral.py), and is
  dead only past the horizon while its provider is down.
The scheduler's sweep that re-queues what lost its message is rescue.py.
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import structlog
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from dramatiq.common import compute_backoff

from apps.notifications import queueing
from apps.notifications.models import Notification, claim_held
from eventplatform import metrics, sql
from eventplatform.broker import MAX_BACKOFF_MS

log = structlog.get_logger("notifications")

Status = Notification.Status
UNFINISHED = (Status.PENDING, Status.RETRYING, Status.SENDING)


def retry_backoff_ms(retries_so_far: int) -> int:
    """Exponential backoff with jitter (Dramatiq's own formula), bounded by today's settings."""
    max_backoff = min(settings.NOTIFICATION_MAX_BACKOFF_MS, MAX_BACKOFF_MS)
    _, delay = compute_backoff(retries_so_far, factor=settings.NOTIFICATION_MIN_BACKOFF_MS, max_backoff=max_backoff)
    return delay


def rate_limit_delay_ms(retry_after: float) -> int:
    """A provider's Retry-After as a retry delay: at most NOTIFICATION_RATE_LIMIT_MAX_WAIT_SECONDS and
    MAX_BACKOFF_MS (a delayed message is held unacked: RabbitMQ's consumer_timeout), plus up to 10 %
    jitter so that the sends it refused do not all come back in the same millisecond."""
    wait = min(retry_after, settings.NOTIFICATION_RATE_LIMIT_MAX_WAIT_SECONDS) * 1000
    return int(min(wait * (1 + random.random() / 10), MAX_BACKOFF_MS))


def horizon_passed(notification: Notification, now: dt.datetime) -> bool:
    """Retry rounds stop this long after creation, or after the last staff replay."""
    since = notification.replayed_at or notification.created_at
    return now - since >= dt.timedelta(seconds=settings.NOTIFICATION_RETRY_HORIZON_SECONDS)


def notification_mark_dead(
    *, notification_id: str, error_code: str, error_message: str, claim: int | None = None, **fields: Any
) -> bool:
    """The one path to `dead`: one guarded UPDATE, one metric, one log line.

    Final failure; the database keeps it (RabbitMQ's dead-letter queue drops after 7 days), and
    staff replay it. A crash before the UPDATE leaves the row as it was: its retry, the claim
    timeout or the rescue sweep brings it back here. From a send, `claim` (the claim's attempt
    number) fences it: a worker whose claim was taken over changes nothing.
    """
    rows = (
        claim_held(notification_id, claim)
        if claim is not None
        else Notification.objects.filter(id=notification_id, status__in=UNFINISHED)
    )
    updated = rows.update(
        status=Status.DEAD,
        last_error_code=error_code,
        last_error_message=error_message[:2000],
        next_attempt_at=None,
        deferred_at=None,
        updated_at=timezone.now(),
        **fields,
    )
    if updated:
        notification = Notification.objects.get(id=notification_id)
        metrics.NOTIFICATIONS.labels(kind=notification.kind, channel=notification.channel, status=Status.DEAD).inc()
        metrics.DEAD_LETTERS.labels(kind=notification.kind, channel=notification.channel, error_code=error_code).inc()
        log.error(
            "notification.dead",
            notification_id=str(notification_id),
            error_code=error_code,
            error=error_message[:300],
            attempts=notification.attempts,
            kind=notification.kind,
            channel=notification.channel,
            provider=notification.provider,
        )
    return bool(updated)


@transaction.atomic
def notification_retries_exhausted(*, notification_id: str) -> str:
    """Dramatiq's retries for one message ran out (they span minutes: RabbitMQ's consumer_timeout
    forbids holding a message for long). Younger than NOTIFICATION_RETRY_HORIZON_SECONDS, the
    notification gets a new round through the outbox after NOTIFICATION_ROUND_DELAY_SECONDS (a
    durable delay in PostgreSQL); older, it is dead with its last error.

    A `sending` row with a live claim belongs to another worker: it is never killed here, only
    given a round, so whoever holds it finishes it and the round finds it done or stale. A round
    already scheduled (next_attempt_at in the future) or a send waiting for its breaker
    (deferred_at) makes a second exhaustion message a no-op.
    Returns rescheduled | already_scheduled | dead | final.
    """
    notification = Notification.objects.select_for_update().filter(id=notification_id).first()
    if notification is None or notification.status not in UNFINISHED:
        return "final"
    now = sql.database_now()  # claimed_at is the database's time (sending._claim)
    if (notification.next_attempt_at and notification.next_attempt_at > now) or notification.deferred_at:
        return "already_scheduled"
    claim_timeout = dt.timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS)
    held = (
        notification.status == Status.SENDING
        and notification.claimed_at
        and (now - notification.claimed_at < claim_timeout)
    )
    error_code = notification.last_error_code or "retries_exhausted"
    if held or not horizon_passed(notification, now):
        delay = dt.timedelta(seconds=settings.NOTIFICATION_ROUND_DELAY_SECONDS)
        Notification.objects.filter(id=notification.id).update(next_attempt_at=now + delay, updated_at=now)
        queueing.enqueue_send(notification, delay=delay)
        metrics.NOTIFICATION_ROUNDS.labels(channel=notification.channel).inc()
        log.warning(
            "notification.retry_round_scheduled",
            error_code=error_code,
            notification_id=notification_id,
            attempts=notification.attempts,
            delay_seconds=settings.NOTIFICATION_ROUND_DELAY_SECONDS,
            kind=notification.kind,
            channel=notification.channel,
        )
        return "rescheduled"
    notification_mark_dead(
        notification_id=notification_id,
        error_code=error_code,
        error_message=f"Retries exhausted: {notification.last_error_message}",
    )
    return "dead"
