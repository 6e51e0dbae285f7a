"""Notification lifecycle: create (with its outbox row), claim, send, record, defer, retry rounds,
dead-letter, replay.

Every notification ends `sent`, `dead` or `cancelled`. The paths in between:
- transient failure: `retrying`, re-raised for Dramatiq's Retries middleware (short backoffs);
- Dramatiq's retries exhausted: a new round through the outbox while younger than the horizon
  (notification_retries_exhausted), else `dead`;
- the provider's circuit breaker open: deferred through the outbox, no attempt used;
- permanent failure: `dead` at once.
"""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.notifications import rendering
from apps.notifications.breakers import Permit, circuit_breaker_permit, circuit_breaker_record
from apps.notifications.errors import NotificationBusy, ProviderPermanentError, ProviderTransientError
from apps.notifications.models import Notification, NotificationAttempt, NotificationReplay
from apps.notifications.providers import OutgoingMessage, Provider, providers_for
from apps.outbox.services import outbox_insert, outbox_insert_many, outbox_message_fields
from eventplatform import metrics
from eventplatform.logging import mask_email, mask_phone

log = structlog.get_logger("notifications")

Status = Notification.Status
CLAIMABLE = (Status.PENDING, Status.RETRYING)
UNFINISHED = (Status.PENDING, Status.RETRYING, Status.SENDING)


def _send_message_fields(notification: Notification, *, delay: dt.timedelta | None = None) -> dict[str, Any]:
    return outbox_message_fields(
        actor_name="notification_send",
        queue_name="notifications",
        kwargs={"notification_id": str(notification.id)},
        correlation_id=notification.correlation_id or None,
        delay=delay,
    )


def _enqueue_send(notification: Notification, *, delay: dt.timedelta | None = None) -> None:
    outbox_insert(_send_message_fields(notification, delay=delay))


def notification_create(
    *,
    registration: Any,
    kind: str,
    channel: str,
    dedupe_key: str = "",
    context: dict[str, Any],
    correlation_id: str = "",
    source_received_at: dt.datetime | None = None,
) -> Notification | None:
    """Create the notification and its outbox row, or return None when it already exists.

    Must run inside the caller's transaction (the change that calls for it). The unique
    constraint, not a prior read, is what makes "each (registration, kind, channel) once" hold.
    """
    recipient = context.get("phone") if channel == Notification.Channel.SMS else context.get("email")
    try:
        with transaction.atomic():
            notification = Notification.objects.create(
                registration=registration, kind=kind, channel=channel, dedupe_key=dedupe_key,
                recipient=recipient or "", context=context, correlation_id=correlation_id,
                source_received_at=source_received_at,
            )
    except IntegrityError:
        return None
    _enqueue_send(notification)
    return notification


def notifications_create_missing(
    *,
    registration_id: int,
    wanted: list[tuple[str, str, str, dict[str, Any]]],
    correlation_id: str = "",
    source_received_at: dt.datetime | None = None,
) -> list[Notification]:
    """Create, with their outbox rows, those of the wanted (kind, channel, dedupe_key, context)
    notifications the registration does not have yet: two INSERTs whatever their number.

    The caller holds the registration's row lock (registration_apply), so nobody else creates
    these kinds for it meanwhile; the unique constraint remains the guarantee.
    """
    existing = set(Notification.objects.filter(registration_id=registration_id)
                   .values_list("kind", "channel", "dedupe_key"))
    new = [
        Notification(registration_id=registration_id, kind=kind, channel=channel, dedupe_key=dedupe_key,
                     recipient=(context.get("phone") if channel == Notification.Channel.SMS
                                else context.get("email")) or "",
                     context=context, correlation_id=correlation_id, source_received_at=source_received_at)
        for kind, channel, dedupe_key, context in wanted if (kind, channel, dedupe_key) not in existing
    ]
    if new:
        Notification.objects.bulk_create(new)
        outbox_insert_many([_send_message_fields(notification) for notification in new])
    return new


def notifications_cancel_pending(*, registration: Any, kinds: tuple[str, ...]) -> int:
    """Cancel not-yet-sent notifications of these kinds (a cancelled registration gets no reminders).

    A reminder being sent right now (`sending`) is not stopped: its provider call is already out.
    """
    pending = Notification.objects.filter(registration=registration, kind__in=kinds, status__in=CLAIMABLE)
    cancelled = 0
    for notification_id, kind, channel in pending.values_list("id", "kind", "channel"):
        if Notification.objects.filter(id=notification_id, status__in=CLAIMABLE).update(
                status=Status.CANCELLED, next_attempt_at=None, updated_at=timezone.now()):
            metrics.NOTIFICATIONS.labels(kind=kind, channel=channel, status=Status.CANCELLED).inc()
            cancelled += 1
    return cancelled


def _claim(notification_id: str) -> Notification | None:
    """Guarded transition to `sending`: of two workers holding copies of one message, one wins.

    A `sending` row whose claim is older than NOTIFICATION_CLAIM_TIMEOUT_SECONDS belonged to a
    worker that died mid-send; it may be claimed again (the documented duplicate window).
    One `UPDATE … RETURNING`: the claim and the row in a single round trip.
    """
    now = timezone.now()
    stale = now - dt.timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS)
    table, pk = Notification._meta.db_table, Notification._meta.pk
    claimed = list(Notification.objects.raw(
        f"UPDATE {table} SET status = %s, claimed_at = %s, attempts = attempts + 1, next_attempt_at = NULL, "
        "updated_at = %s WHERE id = %s AND (status IN (%s, %s) OR (status = %s AND claimed_at < %s)) RETURNING *",
        [Status.SENDING, now, now, pk.get_db_prep_value(notification_id, connection), *CLAIMABLE, Status.SENDING,
         stale],
    ))
    return claimed[0] if claimed else None


@dataclass(frozen=True)
class SendResult:
    outcome: str  # sent | deferred | dead | skipped (a transient failure raises)
    notification_id: str


def _record_attempt(
    notification: Notification, *, started: dt.datetime, duration: float, outcome: str, provider: str,
    error: Exception | None = None, provider_message_id: str = "",
) -> None:
    NotificationAttempt.objects.create(
        notification=notification, number=notification.attempts, started_at=started,
        duration_ms=int(duration * 1000), outcome=outcome, provider=provider,
        error_code=getattr(error, "code", "") if error else "", error_message=str(error)[:2000] if error else "",
        provider_message_id=provider_message_id,
    )
    metrics.NOTIFICATION_ATTEMPTS.labels(channel=notification.channel, provider=provider, outcome=outcome,
                                         error_code=getattr(error, "code", "") if error else "").inc()


def _finish(notification: Notification, status: str, **fields: Any) -> bool:
    """Leave `sending` (only the claim holder's row is still `sending`)."""
    updated = Notification.objects.filter(id=notification.id, status=Status.SENDING).update(
        status=status, updated_at=timezone.now(), **fields
    )
    if updated and status in (Status.SENT, Status.DEAD):
        metrics.NOTIFICATIONS.labels(kind=notification.kind, channel=notification.channel, status=status).inc()
    return bool(updated)


def _masked(notification: Notification) -> str:
    if notification.channel == Notification.Channel.SMS:
        return mask_phone(notification.recipient) or ""
    return mask_email(notification.recipient) or ""


def _horizon_passed(notification: Notification, now: dt.datetime) -> bool:
    """Retry rounds stop this long after creation, or after the last staff replay."""
    since = notification.replayed_at or notification.created_at
    return now - since >= dt.timedelta(seconds=settings.NOTIFICATION_RETRY_HORIZON_SECONDS)


def _route(providers: list[Provider]) -> tuple[Provider, Permit] | float:
    """The first provider whose breaker lets a send through, or how long until one may."""
    waits = []
    for provider in providers:
        permit = circuit_breaker_permit(provider=provider.name)
        if permit.allowed:
            return provider, permit
        waits.append(permit.retry_in)
    return min(waits)


def notification_send(*, notification_id: str) -> SendResult:
    """Claim, send through the channel's provider, record the attempt and the outcome.

    No transaction spans the provider call: the claim is committed first, so a crash during the
    call leaves the row `sending` with a claim time (see _claim). The one remaining duplicate
    window: the provider accepted the message and the process died before `sent` was recorded;
    the row is then re-claimed after the claim timeout and sent again, and shows two attempts.

    Transient errors leave the row `retrying` and are re-raised for Dramatiq's Retries
    middleware; permanent ones make it `dead` at once. While every provider of the channel has
    its circuit breaker open, the send is deferred: nothing is attempted and the message completes.
    """
    notification = _claim(notification_id)
    if notification is None:
        current = Notification.objects.filter(id=notification_id).values_list("status", flat=True).first()
        if current == Status.SENDING:
            raise NotificationBusy(f"Notification {notification_id} is being sent by another worker.")
        log.info("notification.skipped", notification_id=notification_id, status=current)
        return SendResult(outcome="skipped", notification_id=notification_id)
    try:
        return _send_claimed(notification)
    except (ProviderTransientError, NotificationBusy):
        raise
    except Exception as error:
        # A bug or a database hiccup after the claim: hand the row back to the retries rather
        # than leave it `sending` until the claim times out.
        _finish(notification, Status.RETRYING, last_error_code="actor_failed",
                last_error_message=f"{type(error).__name__}: {error}"[:2000])
        raise


def _send_claimed(notification: Notification) -> SendResult:
    log_context = {"notification_id": str(notification.id), "kind": notification.kind,
                   "channel": notification.channel, "recipient": _masked(notification),
                   "attempt": notification.attempts}
    started, clock = timezone.now(), time.perf_counter()
    try:
        if not notification.recipient:
            raise ProviderPermanentError("The registration has no recipient for this channel.",
                                         code="invalid_recipient")
        providers = providers_for(notification.channel)
        rendered = rendering.render(kind=notification.kind, channel=notification.channel, context=notification.context)
    except ProviderPermanentError as error:
        return _dead(notification, error, provider=notification.channel, started=started,
                     duration=time.perf_counter() - clock, log_context=log_context)

    route = _route(providers)
    if not isinstance(route, tuple):
        return _defer(notification, retry_in=route, providers=providers, log_context=log_context)
    provider, permit = route
    started, clock = timezone.now(), time.perf_counter()
    try:
        try:
            provider_message_id = provider.send(OutgoingMessage(
                notification_id=str(notification.id), recipient=notification.recipient, subject=rendered.subject,
                text=rendered.text, html=rendered.html,
            ))
        except (ProviderPermanentError, ProviderTransientError):
            raise
        except Exception as error:  # noqa: BLE001 - a provider's unexpected error: retrying is safe
            raise ProviderTransientError(f"Unexpected {type(error).__name__}: {error}",
                                         code="provider_error") from error
    except ProviderPermanentError as error:
        circuit_breaker_record(provider=provider.name, permit=permit, failed=False)
        return _dead(notification, error, provider=provider.name, started=started,
                     duration=time.perf_counter() - clock, log_context=log_context)
    except ProviderTransientError as error:
        duration = time.perf_counter() - clock
        circuit_breaker_record(provider=provider.name, permit=permit, failed=True)
        _record_attempt(notification, started=started, duration=duration, outcome="transient_error",
                        provider=provider.name, error=error)
        _finish(notification, Status.RETRYING, last_error_code=error.code, last_error_message=error.message[:2000],
                provider=provider.name)
        metrics.NOTIFICATION_RETRIES.labels(channel=notification.channel).inc()
        log.warning("notification.transient_failure", error_code=error.code, error=error.message,
                    provider=provider.name, **log_context)
        raise
    duration = time.perf_counter() - clock
    circuit_breaker_record(provider=provider.name, permit=permit, failed=False)
    now = timezone.now()
    with transaction.atomic():  # one commit for the attempt and the outcome
        _record_attempt(notification, started=started, duration=duration, outcome="sent", provider=provider.name,
                        provider_message_id=provider_message_id)
        _finish(notification, Status.SENT, sent_at=now, provider=provider.name,
                provider_message_id=provider_message_id, last_error_code="", last_error_message="")
    metrics.NOTIFICATION_SEND_SECONDS.labels(channel=notification.channel).observe(duration)
    if notification.source_received_at:
        metrics.NOTIFICATION_END_TO_END_SECONDS.labels(kind=notification.kind, channel=notification.channel).observe(
            (now - notification.source_received_at).total_seconds())
    log.info("notification.sent", duration_ms=int(duration * 1000), provider=provider.name, **log_context)
    return SendResult(outcome="sent", notification_id=str(notification.id))


def _dead(notification: Notification, error: ProviderPermanentError, *, provider: str, started: dt.datetime,
          duration: float, log_context: dict[str, Any]) -> SendResult:
    _record_attempt(notification, started=started, duration=duration, outcome="permanent_error", provider=provider,
                    error=error)
    _finish(notification, Status.DEAD, last_error_code=error.code, last_error_message=error.message[:2000],
            provider=provider)
    metrics.DEAD_LETTERS.labels(kind=notification.kind, channel=notification.channel, error_code=error.code).inc()
    log.error("notification.dead", error_code=error.code, error=error.message, provider=provider, **log_context)
    return SendResult(outcome="dead", notification_id=str(notification.id))


@transaction.atomic
def _defer(notification: Notification, *, retry_in: float, providers: list[Provider],
           log_context: dict[str, Any]) -> SendResult:
    """Every provider's breaker is open: hand the claim back without using an attempt and queue the
    next try through the outbox (a durable delay: nothing waits unacked in RabbitMQ).

    The release and the outbox row commit together: a crash before COMMIT leaves the row `sending`,
    and the unacknowledged message is redelivered and re-claims it after the claim timeout.
    """
    names = ", ".join(provider.name for provider in providers)
    now = timezone.now()
    if _horizon_passed(notification, now):
        _finish(notification, Status.DEAD, attempts=F("attempts") - 1, last_error_code="circuit_open",
                last_error_message=f"Circuit breaker of {names} open past the retry horizon.")
        metrics.DEAD_LETTERS.labels(kind=notification.kind, channel=notification.channel,
                                    error_code="circuit_open").inc()
        log.error("notification.dead", error_code="circuit_open", provider=names, **log_context)
        return SendResult(outcome="dead", notification_id=str(notification.id))
    # Jitter: deferred sends do not all come back in the same instant when the breaker closes.
    delay = dt.timedelta(seconds=retry_in + random.uniform(0, 1))
    released = _finish(
        notification, Status.RETRYING if notification.attempts > 1 else Status.PENDING,
        attempts=F("attempts") - 1, claimed_at=None, next_attempt_at=now + delay, last_error_code="circuit_open",
        last_error_message=f"Deferred: circuit breaker of {names} open.",
    )
    if released:
        _enqueue_send(notification, delay=delay)
    metrics.NOTIFICATION_DEFERRALS.labels(channel=notification.channel).inc()
    log.info("notification.deferred", error_code="circuit_open", provider=names,
             retry_in_seconds=round(delay.total_seconds(), 1), **log_context)
    return SendResult(outcome="deferred", notification_id=str(notification.id))


@transaction.atomic
def notification_retries_exhausted(*, notification_id: str) -> str:
    """Dramatiq's retries for one message ran out (they span minutes: RabbitMQ's consumer_timeout
    forbids holding a message for long). Younger than NOTIFICATION_RETRY_HORIZON_SECONDS, the
    notification gets a new round through the outbox after NOTIFICATION_ROUND_DELAY_SECONDS (a
    durable delay in PostgreSQL); older, it is dead with its last error.

    A `sending` row with a live claim belongs to another worker: it is never killed here, only
    given a round, so whoever holds it finishes it and the round finds it done or stale. A round
    already scheduled (next_attempt_at in the future) makes a second exhaustion message a no-op.
    Returns rescheduled | already_scheduled | dead | final.
    """
    notification = Notification.objects.select_for_update().filter(id=notification_id).first()
    if notification is None or notification.status not in UNFINISHED:
        return "final"
    now = timezone.now()
    if notification.next_attempt_at and notification.next_attempt_at > now:
        return "already_scheduled"
    claim_timeout = dt.timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS)
    held = notification.status == Status.SENDING and notification.claimed_at and (
        now - notification.claimed_at < claim_timeout)
    error_code = notification.last_error_code or "retries_exhausted"
    if held or not _horizon_passed(notification, now):
        delay = dt.timedelta(seconds=settings.NOTIFICATION_ROUND_DELAY_SECONDS)
        Notification.objects.filter(id=notification.id).update(next_attempt_at=now + delay, updated_at=now)
        _enqueue_send(notification, delay=delay)
        metrics.NOTIFICATION_ROUNDS.labels(channel=notification.channel).inc()
        log.warning("notification.retry_round_scheduled", error_code=error_code, notification_id=notification_id,
                    attempts=notification.attempts, delay_seconds=settings.NOTIFICATION_ROUND_DELAY_SECONDS,
                    kind=notification.kind, channel=notification.channel)
        return "rescheduled"
    notification_mark_dead(notification_id=notification_id, error_code=error_code,
                           error_message=f"Retries exhausted: {notification.last_error_message}")
    return "dead"


# A retry is never more than 5 minutes away (the backoff cap): a row quiet for three times that
# has lost its message.
STALLED_AFTER = dt.timedelta(minutes=15)


def notifications_rescue_stalled(*, now: dt.datetime | None = None) -> int:
    """Treat notifications whose retry message was lost as if their retries had run out.

    Dramatiq publishes a retry (and the hand-off to the dead-letter actor) to RabbitMQ directly,
    not through the outbox; if RabbitMQ fails at that instant the message is gone and the row would
    stay `retrying` (or `sending`, after a crash) forever. Run periodically (by `send_reminders`),
    this finds such rows and gives them a retry round, or marks them dead past the horizon. A row
    that was only slow costs one extra message, which the claim turns into a no-op.
    """
    now = now or timezone.now()
    quiet = now - STALLED_AFTER
    stale_claim = quiet - dt.timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS)
    stalled = Notification.objects.filter(
        Q(status=Status.RETRYING, updated_at__lt=quiet) | Q(status=Status.SENDING, claimed_at__lt=stale_claim),
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=quiet),
    ).values_list("id", flat=True)
    rescued = 0
    for notification_id in list(stalled):
        if notification_retries_exhausted(notification_id=str(notification_id)) in ("rescheduled", "dead"):
            log.warning("notification.stalled_rescued", notification_id=str(notification_id),
                        error_code="retries_exhausted")
            rescued += 1
    return rescued


def notification_mark_dead(*, notification_id: str, error_code: str, error_message: str) -> bool:
    """Final failure; the database keeps it (RabbitMQ's dead-letter queue drops after 7 days)."""
    updated = Notification.objects.filter(id=notification_id, status__in=UNFINISHED).update(
        status=Status.DEAD, last_error_code=error_code, last_error_message=error_message[:2000],
        next_attempt_at=None, updated_at=timezone.now())
    if updated:
        notification = Notification.objects.get(id=notification_id)
        metrics.NOTIFICATIONS.labels(kind=notification.kind, channel=notification.channel, status="dead").inc()
        metrics.DEAD_LETTERS.labels(kind=notification.kind, channel=notification.channel, error_code=error_code).inc()
        log.error("notification.dead", notification_id=notification_id, error_code=error_code,
                  attempts=notification.attempts, kind=notification.kind, channel=notification.channel)
    return bool(updated)


@transaction.atomic
def notification_replay(
    *,
    notification_id: uuid.UUID | str,
    reason: str,
    user: AbstractBaseUser | None = None,
    command: str = "",
    os_user: str = "",
    include_sent: bool = False,
) -> bool:
    """Staff replay: a dead (or, explicitly, a sent) notification goes back to pending and is queued,
    and a NotificationReplay row records who (`user`, or `command` run by `os_user`), when and why.

    The status change, the outbox row and the audit row commit together: if the process dies before
    the commit, nothing happened (no send, no audit); after it, the relay publishes the send. The
    row lock makes two staff replaying the same notification at once queue it once: the second finds
    it pending and returns False, with no audit row. The retry horizon starts again from the replay,
    so a replayed notification gets its full day of retry rounds.
    """
    reason = reason.strip()
    if not reason:
        raise ValueError("a replay needs a reason (it is kept in the audit)")
    if (user is None) == (not command):
        raise ValueError("a replay is made either by a user or by a command")
    statuses = [Status.DEAD] + ([Status.SENT] if include_sent else [])
    notification = Notification.objects.select_for_update().filter(id=notification_id, status__in=statuses).first()
    if notification is None:
        return False
    now = timezone.now()
    Notification.objects.filter(id=notification.id).update(
        status=Status.PENDING, claimed_at=None, next_attempt_at=None, replayed_at=now, updated_at=now
    )
    _enqueue_send(notification)
    actor = user.get_username() if user is not None else f"{command} (os user {os_user or 'unknown'})"
    NotificationReplay.objects.create(
        notification=notification, replayed_at=now, reason=reason,
        actor_type=NotificationReplay.Actor.USER if user is not None else NotificationReplay.Actor.COMMAND,
        user=user, actor=actor[:200], previous_status=notification.status,
        previous_error_code=notification.last_error_code, previous_attempts=notification.attempts,
    )
    log.info("notification.replayed", notification_id=str(notification.id), previous_status=notification.status,
             actor=mask_email(actor) if "@" in actor else actor, kind=notification.kind, channel=notification.channel)
    return True
