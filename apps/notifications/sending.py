"""Claim, route, send, record: one notification from its message to `sent` (or to failures.py).

No transaction spans a provider call. The claim is committed first, so a crash during the call
leaves the row `sending` with a claim time (see _claim); its attempt number fences every later
update of the send. The claim also refuses a message that no longer makes sense (registration
cancelled since, event started): `cancelled`, with the reason. Once the provider accepted, `sent`
is committed first, in one statement with the attempt row, and if the database refuses that, `sent`
alone, retried until the claim is about to expire (_mark_sent); only then the rest of the
bookkeeping (breaker, metrics), whose errors are logged. Nothing on this path hands the claim back,
so nothing accepted is sent twice without a crash or an outage longer than the claim. The windows
left (a crash between the provider's accept and the `sent` COMMIT; the database away for the whole
claim) are listed, with their length, in docs/notifications.md.

What a failure means comes from apps/notifications/classification.py:
- message_temporary / provider_down: the row goes `retrying` and the error is re-raised for
  Dramatiq's Retries middleware (this message's own backoff); only provider_down counts toward the
  provider's breaker;
- message_permanent: dead at once (failures.notification_mark_dead);
- outcome_unknown (the provider got the whole message and never answered): dead at once with that
  code, never retried: the provider may have it; staff decide;
- provider_misconfigured: the breaker opens at once as `misconfigured` and the same send is routed
  to the next provider (the fallback), or waits;
- every provider of the channel blocked by its breaker: the send waits in PostgreSQL (deferred_at,
  no outbox row, no attempt used) and one probe message per channel is queued; whoever closes the
  breaker wakes the waiting sends (failures.notifications_wake_deferred).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.notifications import channels, classification, queueing, rendering
from apps.notifications.breakers import (
    Permit,
    circuit_breaker_lets_through,
    circuit_breaker_permit,
    circuit_breaker_probe_started,
    circuit_breaker_record,
    circuit_breaker_schedule_probe,
)
from apps.notifications.classification import FailureClass
from apps.notifications.errors import (
    NotificationBusy,
    ProviderError,
    ProviderOutcomeUnknownError,
    ProviderPermanentError,
    ProviderTransientError,
    SentNotRecorded,
)
from apps.notifications.failures import (
    horizon_passed,
    notification_mark_dead,
    notifications_wake_deferred,
)
from apps.notifications.models import CLAIMABLE, Notification, NotificationAttempt
from apps.notifications.providers import OutgoingMessage, Provider
from apps.outbox.services import DISCARD_UNPUBLISHED, outbox_discard
from eventplatform import metrics, sql

log = structlog.get_logger("notifications")

Status = Notification.Status
_TABLE = Notification._meta.db_table


@dataclass(frozen=True)
class SendResult:
    outcome: str  # sent | deferred | dead | skipped (a temporary failure raises)
    notification_id: str


@dataclass(frozen=True)
class Blocked:
    """Every provider of the channel refused by its breaker."""

    retry_in: float
    misconfigured: bool


# The registration a notification's foreign key points to, reached through that key: registrations
# sits above notifications (docs/architecture.md), so this module does not import it.
Registration = Notification._meta.get_field("registration").related_model
_REGISTRATION_TABLE = Registration._meta.db_table
# Why a claimed row must not be sent after all ('' when it may): the registration was cancelled since
# (only its cancellation still makes sense), or a reminder's event has started. Read in the claim's
# own statement (a join on the registration's primary key): no extra round trip per send.
_STALE_REASON = (
    "CASE WHEN n.kind <> %s AND r.status = %s THEN %s "
    "WHEN n.kind IN (%s, %s) AND r.event_starts_at <= {now} THEN %s ELSE '' END"
)
_STALE_PARAMS = [
    Notification.Kind.CANCELLATION,
    Registration.Status.CANCELLED,
    "registration_cancelled",
    Notification.Kind.REMINDER_24H,
    Notification.Kind.REMINDER_1H,
    "event_started",
]
STALE_MESSAGES = {
    "registration_cancelled": "Not sent: the registration was cancelled after this notification was created.",
    "event_started": "Not sent: the event has already started.",
}


@functools.cache
def _claim_statement(vendor: str) -> str:
    # The database's clock, not this machine's: claims are made and judged stale by workers on
    # different machines (statement_timestamp(): also right inside a caller's transaction).
    now = "statement_timestamp()" if vendor == "postgresql" else "%s"
    stale_claim = "statement_timestamp() - make_interval(secs => %s)" if vendor == "postgresql" else "%s"
    reason = _STALE_REASON.format(now=now)
    # PostgreSQL needs the columns qualified (the registration's have the same names); SQLite's
    # RETURNING sees only the updated table, and refuses a qualified name.
    prefix = "n." if vendor == "postgresql" else ""
    columns = ", ".join(
        f"{prefix}{connection.ops.quote_name(field.column)}" for field in Notification._meta.concrete_fields
    )
    return (
        f"UPDATE {_TABLE} AS n SET status = CASE WHEN ({reason}) = '' THEN %s ELSE %s END, "
        f"claimed_at = {now}, attempts = attempts + CASE WHEN ({reason}) = '' THEN 1 ELSE 0 END, "
        f"last_error_code = CASE WHEN ({reason}) = '' THEN last_error_code ELSE ({reason}) END, "
        f"next_attempt_at = NULL, deferred_at = NULL, updated_at = {now} "
        f"FROM {_REGISTRATION_TABLE} AS r "
        f"WHERE n.id = %s AND r.id = n.registration_id AND (n.status IN (%s, %s) OR (n.status = %s AND "
        f"n.claimed_at < {stale_claim})) RETURNING {columns}"
    )


def notification_stale_reason(*, notification_id: str | uuid.UUID) -> str:
    """Why the claim would cancel this notification now ('' when it would send it): the claim's
    own rule (_STALE_REASON) and clock, for a replay to refuse what its send would cancel."""
    postgres = connection.vendor == "postgresql"
    now = [] if postgres else [timezone.now()]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_STALE_REASON.format(now='statement_timestamp()' if postgres else '%s')} "
            f"FROM {_TABLE} AS n JOIN {_REGISTRATION_TABLE} AS r ON r.id = n.registration_id WHERE n.id = %s",
            [
                *_STALE_PARAMS[:5],
                *now,
                _STALE_PARAMS[5],
                Notification._meta.pk.get_db_prep_value(notification_id, connection),
            ],
        )
        row = cursor.fetchone()
    return row[0] if row else ""


def _claim(notification_id: str) -> Notification | None:
    """Guarded transition to `sending`: of two workers holding copies of one message, one wins.

    A `sending` row whose claim is older than NOTIFICATION_CLAIM_TIMEOUT_SECONDS (by the database's
    clock) belonged to a worker that died mid-send; it may be claimed again (the documented
    duplicate window). The claim's attempt number (`attempts`, raised by one) fences every later
    update of this send: a worker whose claim was taken over changes nothing.

    The same statement checks that the message still makes sense (_STALE_REASON): if not, the row
    goes `cancelled` with the reason in last_error_code instead of `sending`, and no attempt is used.
    One `UPDATE … RETURNING`: the claim, the check and the row in a single round trip.
    """
    postgres = connection.vendor == "postgresql"
    now = [] if postgres else [timezone.now()]
    stale_claim = (
        settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS
        if postgres
        else timezone.now() - dt.timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS)
    )
    reason = [*_STALE_PARAMS[:5], *now, _STALE_PARAMS[5]]
    with connection.cursor() as cursor:
        cursor.execute(
            _claim_statement(connection.vendor),
            [
                *reason,
                Status.SENDING,
                Status.CANCELLED,
                *now,
                *reason,
                *reason,
                *reason,
                *now,
                Notification._meta.pk.get_db_prep_value(notification_id, connection),
                *CLAIMABLE,
                Status.SENDING,
                stale_claim,
            ],
        )
        return sql.fetch_instance(Notification, cursor)


def _attempt(
    notification: Notification,
    *,
    started: dt.datetime,
    duration: float,
    outcome: str,
    provider: str,
    error: Exception | None = None,
    provider_message_id: str = "",
) -> NotificationAttempt:
    return NotificationAttempt(
        notification=notification,
        number=notification.attempts,
        started_at=started,
        duration_ms=int(duration * 1000),
        outcome=outcome,
        provider=provider,
        error_code=getattr(error, "code", "") if error else "",
        error_message=str(error)[:2000] if error else "",
        provider_message_id=provider_message_id,
    )


def _count_attempt(attempt: NotificationAttempt, channel: str) -> None:
    metrics.NOTIFICATION_ATTEMPTS.labels(
        channel=channel, provider=attempt.provider, outcome=attempt.outcome, error_code=attempt.error_code
    ).inc()


def _record_attempt(notification: Notification, **fields: Any) -> None:
    attempt = _attempt(notification, **fields)
    sql.insert(attempt)
    _count_attempt(attempt, notification.channel)


def _finish(notification: Notification, status: str, **fields: Any) -> bool:
    """Leave `sending`, fenced by the claim: only while the row is still this claim's (`sending`
    with this claim's attempt number); a worker whose claim was taken over changes nothing."""
    updated = Notification.objects.filter(
        id=notification.id, status=Status.SENDING, attempts=notification.attempts
    ).update(status=status, updated_at=timezone.now(), **fields)
    if updated and status == Status.SENT:
        metrics.NOTIFICATIONS.labels(kind=notification.kind, channel=notification.channel, status=status).inc()
    return bool(updated)


def _single_statement() -> contextlib.AbstractContextManager[Any]:
    """What one statement needs to commit on its own: nothing in autocommit mode (as the workers
    run: a BEGIN and a COMMIT would be two more round trips), a savepoint inside a caller's
    transaction (so that its failure does not abort the caller's)."""
    return transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()


# `sent`, guarded like _finish, with two rows in the same statement (one round trip, one commit):
# - the send-at-once safety-net row is deleted (the outbox row whose id is the notification's,
#   send_at_once.py) if it is still unpublished: a notification sent needs it no more; any other
#   notification has no such row, and the DELETE is one primary-key lookup that finds nothing;
# - the attempt row is inserted. Should the database refuse it, the statement is run again
#   without it (_mark_sent): a refused history row must never keep `sent` from being committed.
_SENT_SET = (
    f"UPDATE {_TABLE} SET status = %s, updated_at = %s, sent_at = %s, provider = %s, provider_message_id = %s, "
    "last_error_code = '', last_error_message = '' WHERE id = %s AND status = %s AND attempts = %s"
)


@functools.cache
def _mark_sent_statement(with_attempt: bool) -> str:
    attempt = f", attempt AS ({sql.insert_statement(NotificationAttempt)})" if with_attempt else ""
    return f"WITH discard AS ({DISCARD_UNPUBLISHED}){attempt} {_SENT_SET}"


# How long to wait between tries of the plain `sent` update, and how close to the claim's expiry to
# give up (past it another worker may claim the row anyway).
_SENT_RETRY_SECONDS = (0.05, 0.2, 0.5, 1.0, 2.0)
_CLAIM_MARGIN_SECONDS = 5.0


def _mark_sent(notification: Notification, attempt: NotificationAttempt, *, now: dt.datetime, claimed: float) -> bool:
    """Commit `sent` (see _SENT_SET); returns whether the attempt row went with it.

    The provider has the message: nothing here hands the claim back. The full statement, then
    without the attempt row, then the plain `sent` update alone (a trigger or permission refusing
    the outbox DELETE, a lock timeout), retried with short pauses until the database takes it or
    the claim (taken at `claimed`, time.monotonic()) is about to expire: SentNotRecorded then, the
    row stays `sending` (the window docs/notifications.md lists). Fenced by the claim's attempt number.
    """
    if connection.vendor != "postgresql":
        with _single_statement():
            _finish(
                notification,
                Status.SENT,
                sent_at=now,
                provider=attempt.provider,
                provider_message_id=attempt.provider_message_id,
                last_error_code="",
                last_error_message="",
            )
            outbox_discard(notification.id)
        return False
    notification_id = Notification._meta.pk.get_db_prep_value(notification.id, connection)
    sent = [
        Status.SENT,
        now,
        now,
        attempt.provider,
        attempt.provider_message_id,
        notification_id,
        Status.SENDING,
        notification.attempts,
    ]
    tries = [
        (_mark_sent_statement(True), [notification_id, *sql.values(attempt), *sent], True),
        (_mark_sent_statement(False), [notification_id, *sent], False),
    ]
    for statement, params, with_attempt in tries:
        try:
            with _single_statement(), connection.cursor() as cursor:
                cursor.execute(statement, params)
                updated = cursor.rowcount
        except DatabaseError as error:  # a refused row (a constraint, a trigger), a lock, a lost connection
            _sent_write_failed(notification, error)
            continue
        _count_sent(notification, updated)
        return with_attempt
    deadline = claimed + settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS - _CLAIM_MARGIN_SECONDS
    pauses = iter(_SENT_RETRY_SECONDS)
    while True:
        try:
            with _single_statement(), connection.cursor() as cursor:
                cursor.execute(_SENT_SET, sent)
                updated = cursor.rowcount
        except DatabaseError as error:
            _sent_write_failed(notification, error)
            pause = next(pauses, _SENT_RETRY_SECONDS[-1])
            if time.monotonic() + pause > deadline:
                raise SentNotRecorded(
                    f"The provider accepted notification {notification.id}, and `sent` could "
                    f"not be written before its claim expires: {type(error).__name__}"
                ) from error
            time.sleep(pause)
            continue
        _count_sent(notification, updated)
        return False


def _sent_write_failed(notification: Notification, error: DatabaseError) -> None:
    log.error(
        "notification.bookkeeping_failed",
        error_code="notification_bookkeeping_failed",
        error=f"{type(error).__name__}: {error}"[:300],
        notification_id=str(notification.id),
    )
    if not connection.in_atomic_block and not connection.is_usable():
        connection.close()  # the next statement connects again


def _count_sent(notification: Notification, updated: int) -> None:
    if updated:
        metrics.NOTIFICATIONS.labels(kind=notification.kind, channel=notification.channel, status=Status.SENT).inc()
    else:  # the claim was taken over (ours outlived the claim timeout): the other worker records it
        log.warning("notification.claim_lost", notification_id=str(notification.id), attempt=notification.attempts)


def _masked(notification: Notification) -> str:
    try:
        return channels.channel(notification.channel).masked(notification.recipient)
    except ProviderPermanentError:  # a channel no longer configured: its send ends dead, with nothing to show
        return ""


def _route(providers: list[Provider]) -> tuple[Provider, Permit] | Blocked:
    """The first provider whose breaker lets a send through, or how long until one may."""
    refusals = []
    for provider in providers:
        permit = circuit_breaker_permit(provider=provider.name)
        if permit.allowed:
            return provider, permit
        refusals.append(permit)
    return Blocked(retry_in=min(p.retry_in for p in refusals), misconfigured=any(p.misconfigured for p in refusals))


def notification_send(*, notification_id: str) -> SendResult:
    """Claim, send through the channel's providers, record the outcome (module docstring).

    Temporary failures leave the row `retrying` and are re-raised for Dramatiq's Retries middleware.
    A row that should not be sent any more (_claim) ends `cancelled` with its reason.
    """
    claimed = time.monotonic()
    notification = _claim(notification_id)
    if notification is not None and notification.status == Status.CANCELLED:
        return _cancelled_at_send(notification)
    if notification is None:
        current = Notification.objects.filter(id=notification_id).values_list("status", flat=True).first()
        if current == Status.SENDING:
            raise NotificationBusy(f"Notification {notification_id} is being sent by another worker.")
        log.info("notification.skipped", notification_id=notification_id, status=current)
        return SendResult(outcome="skipped", notification_id=notification_id)
    try:
        return _send_claimed(notification, claimed)
    except (ProviderTransientError, NotificationBusy):
        raise
    except SentNotRecorded as error:  # the provider has it: never handed back for a resend
        log.error(
            "notification.sent_not_recorded",
            error_code=error.code,
            error=error.message[:300],
            notification_id=notification_id,
            attempt=notification.attempts,
        )
        raise
    except Exception as error:
        # A bug or a database hiccup after the claim: hand the row back to the retries rather
        # than leave it `sending` until the claim times out. Guarded on `sending`: a row already
        # recorded `sent` stays sent.
        _finish(
            notification,
            Status.RETRYING,
            last_error_code="actor_failed",
            last_error_message=f"{type(error).__name__}: {error}"[:2000],
        )
        raise


def _cancelled_at_send(notification: Notification) -> SendResult:
    """The claim found the message stale (_STALE_REASON) and made the row `cancelled`: say why, for staff."""
    reason = notification.last_error_code
    Notification.objects.filter(id=notification.id, status=Status.CANCELLED).update(
        last_error_message=STALE_MESSAGES.get(reason, reason)
    )
    outbox_discard(notification.id)
    metrics.NOTIFICATIONS.labels(kind=notification.kind, channel=notification.channel, status=Status.CANCELLED).inc()
    log.info(
        "notification.cancelled_at_send",
        notification_id=str(notification.id),
        kind=notification.kind,
        channel=notification.channel,
        reason=reason,
    )
    return SendResult(outcome="cancelled", notification_id=str(notification.id))


def _send_claimed(notification: Notification, claimed: float) -> SendResult:
    log_context = {
        "notification_id": str(notification.id),
        "kind": notification.kind,
        "channel": notification.channel,
        "recipient": _masked(notification),
        "attempt": notification.attempts,
    }
    started, clock = timezone.now(), time.perf_counter()
    try:
        if not notification.recipient:
            raise ProviderPermanentError(
                "The registration has no recipient for this channel.", code="invalid_recipient"
            )
        providers = channels.providers_for(notification.channel)
        rendered = rendering.render(kind=notification.kind, channel=notification.channel, context=notification.context)
    except ProviderPermanentError as error:
        _record_attempt(
            notification,
            started=started,
            duration=time.perf_counter() - clock,
            outcome=NotificationAttempt.Outcome.PERMANENT_ERROR,
            provider=notification.channel,
            error=error,
        )
        notification_mark_dead(
            notification_id=str(notification.id),
            error_code=error.code,
            error_message=error.message,
            provider=notification.channel,
            claim=notification.attempts,
        )
        return SendResult(outcome="dead", notification_id=str(notification.id))
    message = OutgoingMessage(
        notification_id=str(notification.id),
        recipient=notification.recipient,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
    )
    misconfigured_error: ProviderError | None = None
    for _ in range(len(providers)):  # a misconfigured provider hands the same send to the next one
        route = _route(providers)
        if isinstance(route, Blocked):
            break
        provider, permit = route
        outcome = _send_once(notification, provider, permit, message, log_context, claimed)
        if isinstance(outcome, SendResult):
            return outcome
        misconfigured_error = outcome
    else:  # every provider turned out misconfigured in this very send (no new permit is asked for:
        # one would claim a probe nobody makes)
        route = Blocked(retry_in=settings.NOTIFICATION_BREAKER_MISCONFIGURED_PROBE_SECONDS, misconfigured=True)
    return _defer(notification, blocked=route, providers=providers, tried=misconfigured_error, log_context=log_context)


def _send_once(
    notification: Notification,
    provider: Provider,
    permit: Permit,
    message: OutgoingMessage,
    log_context: dict[str, Any],
    claimed: float,
) -> SendResult | ProviderError:
    """One provider call. Returns the result, raises a temporary failure, or returns the error when
    the provider turned out misconfigured (its breaker is now open as such: route again)."""
    started, clock = timezone.now(), time.perf_counter()
    try:
        provider_message_id = provider.send(message)
    except ProviderError as raised:
        error = raised
    except Exception as unexpected:  # noqa: BLE001 - a provider's unexpected error: retrying is safe
        error = classification.provider_error(
            classification.UNCLASSIFIED, f"Unexpected {type(unexpected).__name__}: {unexpected}"
        )
    else:
        return _record_sent(
            notification,
            provider,
            permit,
            provider_message_id=provider_message_id,
            started=started,
            duration=time.perf_counter() - clock,
            log_context=log_context,
            claimed=claimed,
        )
    duration = time.perf_counter() - clock
    failure = classification.failure_class_of(error)
    if circuit_breaker_record(
        provider=provider.name, permit=permit, failure_class=failure, reason=f"{error.code}: {error.message}"
    ):
        notifications_wake_deferred(channel=notification.channel)  # a probe answered: the provider works
    # An unknown outcome ends like a permanent failure (dead, for staff), never retried: the provider
    # may have the message (ProviderOutcomeUnknownError).
    permanent = failure in (FailureClass.MESSAGE_PERMANENT, FailureClass.OUTCOME_UNKNOWN)
    _record_attempt(
        notification,
        started=started,
        duration=duration,
        provider=provider.name,
        error=error,
        outcome=NotificationAttempt.Outcome.PERMANENT_ERROR
        if permanent
        else NotificationAttempt.Outcome.TRANSIENT_ERROR,
    )
    if permanent:
        notification_mark_dead(
            notification_id=str(notification.id),
            error_code=error.code,
            error_message=error.message,
            provider=provider.name,
            claim=notification.attempts,
        )
        if isinstance(error, ProviderOutcomeUnknownError):
            log.error(
                "notification.outcome_unknown",
                error_code=error.code,
                error=error.message[:300],
                provider=provider.name,
                **log_context,
            )
        return SendResult(outcome="dead", notification_id=str(notification.id))
    if failure == FailureClass.PROVIDER_MISCONFIGURED:
        log.error(
            "notification.provider_misconfigured",
            error_code=error.code,
            error=error.message,
            provider=provider.name,
            **log_context,
        )
        return error
    _finish(
        notification,
        Status.RETRYING,
        last_error_code=error.code,
        last_error_message=error.message[:2000],
        provider=provider.name,
    )
    metrics.NOTIFICATION_RETRIES.labels(channel=notification.channel).inc()
    log.warning(
        "notification.transient_failure",
        error_code=error.code,
        error=error.message,
        failure_class=str(failure),
        provider=provider.name,
        **log_context,
    )
    if isinstance(error, ProviderTransientError):
        raise error
    raise ProviderTransientError(error.message, code=error.code) from error


def _record_sent(
    notification: Notification,
    provider: Provider,
    permit: Permit,
    *,
    provider_message_id: str,
    started: dt.datetime,
    duration: float,
    log_context: dict[str, Any],
    claimed: float,
) -> SendResult:
    """`sent` first, committed with its attempt row and nothing else; then the bookkeeping, whose
    failure is logged and never re-sends (the provider has the message)."""
    attempt = _attempt(
        notification,
        started=started,
        duration=duration,
        outcome=NotificationAttempt.Outcome.SENT,
        provider=provider.name,
        provider_message_id=provider_message_id[: NotificationAttempt.provider_message_id.field.max_length],
    )
    now = timezone.now()
    attempt_recorded = _mark_sent(notification, attempt, now=now, claimed=claimed)
    log.info("notification.sent", duration_ms=int(duration * 1000), provider=provider.name, **log_context)
    try:
        if not attempt_recorded:
            with _single_statement():
                sql.insert(attempt)
        _count_attempt(attempt, notification.channel)
        if circuit_breaker_record(provider=provider.name, permit=permit, failure_class=None):
            notifications_wake_deferred(channel=notification.channel)
        metrics.NOTIFICATION_SEND_SECONDS.labels(channel=notification.channel).observe(duration)
        if notification.source_received_at:
            metrics.NOTIFICATION_END_TO_END_SECONDS.labels(
                kind=notification.kind,
                channel=notification.channel,
            ).observe((now - notification.source_received_at).total_seconds())
    except Exception as error:  # noqa: BLE001 - the message is out and recorded sent; only history is missing
        log.error(
            "notification.bookkeeping_failed",
            error_code="notification_bookkeeping_failed",
            error=f"{type(error).__name__}: {error}"[:300],
            provider=provider.name,
            **log_context,
        )
    return SendResult(outcome="sent", notification_id=str(notification.id))


def _defer(
    notification: Notification,
    *,
    blocked: Blocked,
    providers: list[Provider],
    tried: ProviderError | None,
    log_context: dict[str, Any],
) -> SendResult:
    """Every provider's breaker is refusing: hand the claim back (no attempt used unless a provider
    was called in this run) and let the send wait in PostgreSQL, with no outbox row of its own.

    One probe message per channel is queued for when the first breaker may let a send through
    (circuit_breaker_schedule_probe); its success wakes every waiting send. The release and the
    probe's outbox row commit together: a crash before COMMIT leaves the row `sending`, and the
    unacknowledged message is redelivered and re-claims it after the claim timeout.

    Past the retry horizon a send waiting for a provider that is down is dead; one waiting for a
    misconfigured provider never is (an operator is needed, and the alert says so).
    """
    names = ", ".join(provider.name for provider in providers)
    now = timezone.now()
    misconfigured = blocked.misconfigured or tried is not None
    if not misconfigured and horizon_passed(notification, now):
        notification_mark_dead(
            notification_id=str(notification.id),
            error_code="circuit_open",
            error_message=f"Circuit breaker of {names} open past the retry horizon.",
            claim=notification.attempts,
            attempts=F("attempts") - 1,
        )
        return SendResult(outcome="dead", notification_id=str(notification.id))
    error_code = tried.code if tried else ("provider_misconfigured" if misconfigured else "circuit_open")
    retry_in = dt.timedelta(seconds=blocked.retry_in + random.uniform(0, 1))
    with transaction.atomic():
        released = _finish(
            notification,
            Status.RETRYING if notification.attempts > 1 else Status.PENDING,
            attempts=F("attempts") - (0 if tried else 1),
            claimed_at=None,
            next_attempt_at=None,
            deferred_at=now,
            last_error_code=error_code,
            last_error_message=(
                f"Waiting: {tried.message}"
                if tried
                else f"Waiting: circuit breaker of {names} {'misconfigured' if misconfigured else 'open'}."
            )[:2000],
        )
        if released and circuit_breaker_schedule_probe(provider=providers[0].name, at=now + retry_in):
            queueing.enqueue_probe(channel=notification.channel, delay=retry_in)
    metrics.NOTIFICATION_DEFERRALS.labels(channel=notification.channel).inc()
    log.info(
        "notification.deferred",
        error_code=error_code,
        provider=names,
        probe_in_seconds=round(retry_in.total_seconds(), 1),
        **log_context,
    )
    # A breaker that closed between our check and our COMMIT has woken the others already.
    if any(circuit_breaker_lets_through(provider=provider.name) for provider in providers):
        notifications_wake_deferred(channel=notification.channel)
    return SendResult(outcome="deferred", notification_id=str(notification.id))


def notifications_probe(*, channel: str) -> str:
    """The channel's probe message: send the longest-waiting deferred notification now.

    Its send goes through the usual routing, so it claims the breaker's probe; a success closes the
    breaker and wakes every waiting send of the channel, a failure defers it again (queueing the
    next probe). Nothing waiting: nothing to probe with, and the next new send probes by itself.
    Returns the probe's outcome (sent | deferred | dead | retrying | nothing_waiting | skipped |
    not_configured).
    """
    try:
        providers = channels.providers_for(channel)
    except ProviderError:
        return "not_configured"  # e.g. SMS switched off meanwhile; each waiting send dies on its own try
    circuit_breaker_probe_started(provider=providers[0].name)
    with transaction.atomic():
        waiting = (
            Notification.objects.select_for_update(skip_locked=True)
            .filter(channel=channel, deferred_at__isnull=False, status__in=CLAIMABLE)
            .order_by("deferred_at")
            .first()
        )
        if waiting is not None:
            Notification.objects.filter(id=waiting.id).update(deferred_at=None)
    if waiting is None:
        return "nothing_waiting"
    try:
        return notification_send(notification_id=str(waiting.id)).outcome
    except NotificationBusy:
        return "skipped"  # another worker holds it; it finishes it
    except ProviderTransientError as error:
        return _after_failed_probe(waiting, providers, error)


def _after_failed_probe(notification: Notification, providers: list[Provider], error: ProviderError) -> str:
    """The probe's send failed and left the row `retrying`. Provider still down (the breaker
    reopened): the row waits again, with no outbox row of its own, and the next probe is queued.
    The provider answered with a per-message temporary refusal (the breaker closed, the others
    were woken): this one goes on with its own backoff."""
    now = timezone.now()
    with transaction.atomic():
        if classification.failure_class_of(error) == FailureClass.PROVIDER_DOWN:
            parked = Notification.objects.filter(id=notification.id, status=Status.RETRYING).update(deferred_at=now)
            retry_in = dt.timedelta(seconds=settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS + random.uniform(0, 1))
            if parked and circuit_breaker_schedule_probe(provider=providers[0].name, at=now + retry_in):
                queueing.enqueue_probe(channel=notification.channel, delay=retry_in)
            return "deferred"
        queueing.enqueue_send(notification, delay=dt.timedelta(milliseconds=settings.NOTIFICATION_MIN_BACKOFF_MS))
    return "retrying"
