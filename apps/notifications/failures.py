"""When a send does not end `sent`: the one path to `dead`, retry rounds after Dramatiq's retries
ran out, waking sends that waited for a circuit breaker, and the scheduler's rescue sweep.

Every notification ends `sent`, `dead` or `cancelled`; this module owns the ways it gets there
other than a successful send (sending.py):
- message_temporary / provider_down: `retrying`, Dramatiq retries with short backoffs; when those
  run out, a new round through the outbox while younger than the horizon, else dead
  (notification_retries_exhausted);
- message_permanent: dead at once (notification_mark_dead, called by sending.py);
- every breaker of the channel open or misconfigured: the send waits in PostgreSQL (deferred_at),
  and is woken in one batch when a breaker lets sends through (notifications_wake_deferred).
"""

from __future__ import annotations

import datetime as dt
import random
from typing import Any

import structlog
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, TextField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone
from dramatiq.common import compute_backoff

from apps.notifications import queueing
from apps.notifications.breakers import circuit_breaker_lets_through, circuit_breaker_schedule_probe
from apps.notifications.channels import providers_for
from apps.notifications.errors import ProviderError
from apps.notifications.models import CLAIMABLE, Notification
from apps.outbox.models import OutboxMessage
from eventplatform import metrics, sql
from eventplatform.broker import MAX_BACKOFF_MS

log = structlog.get_logger("notifications")

Status = Notification.Status
UNFINISHED = (Status.PENDING, Status.RETRYING, Status.SENDING)
# Woken sends are spread at this rate, so the provider that just recovered is not hit by
# thousands in the same second.
WAKE_PER_SECOND = 200
WAKE_BATCH = 1000


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
    guard = {"status": Status.SENDING, "attempts": claim} if claim is not None else {"status__in": UNFINISHED}
    updated = Notification.objects.filter(id=notification_id, **guard).update(
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


def notifications_wake_deferred(*, channel: str) -> int:
    """Queue again, in batches of one INSERT each, the sends of this channel that wait for a breaker.

    Called by the worker whose probe closed a breaker, and by the rescue sweep for any left waiting
    while a breaker is closed. Each batch clears `deferred_at` and writes the outbox rows in one
    transaction (SKIP LOCKED: two wakers share the work); a crash before COMMIT leaves them waiting
    for the next sweep.
    """
    table = Notification._meta.db_table
    woken = 0
    while True:
        with transaction.atomic():
            now = timezone.now()
            if connection.vendor == "postgresql":
                rows = list(
                    Notification.objects.raw(
                        f"UPDATE {table} SET deferred_at = NULL, updated_at = %s WHERE id IN (SELECT id FROM {table} "
                        "WHERE channel = %s AND deferred_at IS NOT NULL AND status IN (%s, %s) ORDER BY deferred_at "
                        f"LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING {sql.column_list(Notification)}",
                        [now, channel, *CLAIMABLE, WAKE_BATCH],
                    )
                )
            else:  # the embedded SQLite mode has one writer at a time
                rows = list(
                    Notification.objects.filter(
                        channel=channel, deferred_at__isnull=False, status__in=CLAIMABLE
                    ).order_by("deferred_at")[:WAKE_BATCH]
                )
                Notification.objects.filter(id__in=[row.id for row in rows]).update(deferred_at=None, updated_at=now)
            queueing.enqueue_sends(
                [
                    queueing.send_message_fields(
                        row, delay=dt.timedelta(seconds=(woken + index) / WAKE_PER_SECOND) if woken + index else None
                    )
                    for index, row in enumerate(rows)
                ]
            )
        woken += len(rows)
        if len(rows) < WAKE_BATCH:
            break
    if woken:
        metrics.NOTIFICATIONS_WOKEN.labels(channel=channel).inc(woken)
        log.info("notification.deferred_woken", channel=channel, count=woken)
    return woken


def _rescue_deferred(now: dt.datetime) -> int:
    """Sends waiting for a breaker: wake those whose channel lets sends through again; for the
    others, make sure one probe message is on its way (it may have been lost)."""
    woken = 0
    channels = (
        Notification.objects.filter(deferred_at__isnull=False, status__in=CLAIMABLE)
        .values_list("channel", flat=True)
        .distinct()
    )
    for channel in list(channels):
        try:
            providers = providers_for(channel)
        except ProviderError:
            continue  # the channel is not configured any more: the next send of each marks it dead
        if any(circuit_breaker_lets_through(provider=provider.name) for provider in providers):
            count = notifications_wake_deferred(channel=channel)
            metrics.NOTIFICATIONS_RESCUED.labels(reason="deferred_woken").inc(count)
            woken += count
            continue
        retry_in = dt.timedelta(seconds=settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS)
        with transaction.atomic():
            if circuit_breaker_schedule_probe(provider=providers[0].name, at=now + retry_in):
                queueing.enqueue_probe(channel=channel, delay=retry_in)
                log.warning("notification.probe_rescheduled", channel=channel, error_code="circuit_open")
    return woken


def _rescue_pending(now: dt.datetime) -> int:
    """`pending` notifications whose message was published long ago and never consumed (lost in
    RabbitMQ, or purged): no outbox row of theirs is still waiting, and nothing happened to them
    for NOTIFICATION_PENDING_RESCUE_AFTER_SECONDS. Re-queued in one batch; a message that was only
    slow costs one extra message, which the claim turns into a no-op."""
    quiet = now - dt.timedelta(seconds=settings.NOTIFICATION_PENDING_RESCUE_AFTER_SECONDS)
    waiting = OutboxMessage.objects.annotate(notification_id=KT("kwargs__notification_id")).filter(
        Q(published_at__isnull=True) | Q(published_at__gte=quiet),
        actor_name=queueing.SEND_ACTOR,
        notification_id=Cast(OuterRef("id"), output_field=TextField()),
    )
    with transaction.atomic():
        lost = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(
                status=Status.PENDING,
                deferred_at__isnull=True,
                updated_at__lt=quiet,
            )
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=quiet))
            .filter(~Exists(waiting))[:WAKE_BATCH]
        )
        if lost:
            Notification.objects.filter(id__in=[n.id for n in lost]).update(updated_at=now)
            queueing.enqueue_sends([queueing.send_message_fields(n) for n in lost])
    for notification in lost:
        log.warning(
            "notification.pending_rescued",
            notification_id=str(notification.id),
            error_code="retries_exhausted",
            kind=notification.kind,
            channel=notification.channel,
        )
    metrics.NOTIFICATIONS_RESCUED.labels(reason="pending_lost").inc(len(lost))
    return len(lost)


# A retry is never more than 5 minutes away (the backoff cap): a row quiet for three times that
# has lost its message.
STALLED_AFTER = dt.timedelta(minutes=15)


def notifications_rescue_stalled(*, now: dt.datetime | None = None) -> int:
    """The scheduler's sweep (`send_reminders`, every run): re-queue what lost its message.

    - `retrying` rows quiet for STALLED_AFTER and `sending` rows whose claim went stale: Dramatiq
      publishes a retry (and the hand-off to the dead-letter actor) to RabbitMQ directly, not
      through the outbox, so a broker failure at that instant loses it; these get a retry round,
      or are dead past the horizon;
    - `pending` rows whose message was published and lost (see _rescue_pending);
    - sends waiting for a breaker that lets sends through again (or whose probe was lost).
    Returns how many were rescued; eventplatform_notifications_rescued_total{reason} counts them.
    """
    now = now or sql.database_now()  # claimed_at is the database's time (sending._claim)
    quiet = now - STALLED_AFTER
    stale_claim = quiet - dt.timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS)
    stalled = Notification.objects.filter(
        Q(status=Status.RETRYING, updated_at__lt=quiet, deferred_at__isnull=True)
        | Q(status=Status.SENDING, claimed_at__lt=stale_claim),
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=quiet),
    ).values_list("id", "status")
    rescued = 0
    for notification_id, status in list(stalled):
        if notification_retries_exhausted(notification_id=str(notification_id)) in ("rescheduled", "dead"):
            log.warning(
                "notification.stalled_rescued", notification_id=str(notification_id), error_code="retries_exhausted"
            )
            metrics.NOTIFICATIONS_RESCUED.labels(reason=f"stalled_{status}").inc()
            rescued += 1
    rescued += _rescue_pending(now)
    rescued += _rescue_deferred(now)
    return rescued
