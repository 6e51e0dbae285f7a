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
  breaker wakes the waiting sends. That story, route to wake, is deferral.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.notifications import channels, classification, deferral, rendering
from apps.notifications.breakers import Permit, circuit_breaker_record
from apps.notifications.classification import FailureClass
from apps.notifications.deferral import Blocked, notification_defer, notifications_wake_deferred
from apps.notifications.delivery import DeliveryReport, ReportOutcome, notification_refused_at_handover
from apps.notifications.errors import (
    NotificationBusy,
    ProviderError,
    ProviderOutcomeUnknownError,
    ProviderPermanentError,
    ProviderTransientError,
    SentNotRecorded,
)
from apps.notifications.failures import notification_mark_dead
from apps.notifications.models import CLAIMABLE, Notification, NotificationAttempt, Suppression, claim_held
from apps.notifications.providers import OutgoingMessage, Provider
from apps.outbox.services import DISCARD_UNPUBLISHED, outbox_discard
from eventplatform import metrics, sql

log = structlog.get_logger("notifications")

Status = Notification.Status
_TABLE = Notification._meta.db_table


@dataclass(frozen=True)
class SendResult:
    outcome: str  # sent | deferred | dead | bounced | suppressed | cancelled | skipped (a temporary failure raises)
    notification_id: str


# The registration a notification's foreign key points to, reached through that key: registrations
# sits above notifications (docs/architecture.md), so this module does not import it.
Registration = Notification._meta.get_field("registration").related_model
_REGISTRATION_TABLE = Registration._meta.db_table
# Why a claimed row must not be sent after all ('' when it may): the registration was cancelled since
# (only its cancellation still makes sense), or a reminder's event has started. Read in the claim's
# own statement (a join on the registration's primary key): no extra round trip per send.
_STALE_WHEN = (
    "WHEN n.kind <> %s AND r.status = %s THEN %s WHEN n.kind IN (%s, %s) AND r.event_starts_at <= {now} THEN %s "
)
_STALE_REASON = f"CASE {_STALE_WHEN}ELSE '' END"
# The claim's reason adds a third: the address has an active Suppression (delivery.py). An EXISTS on
# the partial unique index of active suppressions, in the claim's own statement: no query per send.
# The address as stored there (selectors.suppression_address): an e-mail lower-cased whole (the
# recipient column is already in its normal form), a number as it is.
_SUPPRESSED_WHEN = (
    f"WHEN EXISTS (SELECT 1 FROM {Suppression._meta.db_table} AS s WHERE s.channel = n.channel "
    "AND s.address = CASE WHEN n.channel = %s THEN LOWER(n.recipient) ELSE n.recipient END "
    "AND s.lifted_at IS NULL) THEN %s "
)
_CLAIM_REASON = f"CASE {_STALE_WHEN}{_SUPPRESSED_WHEN}ELSE '' END"
SUPPRESSED_REASON = "address_suppressed"
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
    "address_suppressed": "Not sent: the address has an active suppression (it bounced for good, its owner "
    "complained or replied STOP, or staff suppressed it). It will not send until the suppression is lifted "
    "(Notifications > Suppressions, with the permission to lift suppressions).",
}


@functools.cache
def _claim_statement(vendor: str) -> str:
    # The database's clock, not this machine's: claims are made and judged stale by workers on
    # different machines (statement_timestamp(): also right inside a caller's transaction).
    now = "statement_timestamp()" if vendor == "postgresql" else "%s"
    stale_claim = "statement_timestamp() - make_interval(secs => %s)" if vendor == "postgresql" else "%s"
    reason = _CLAIM_REASON.format(now=now)
    # PostgreSQL needs the columns qualified (the registration's have the same names); SQLite's
    # RETURNING sees only the updated table, and refuses a qualified name.
    prefix = "n." if vendor == "postgresql" else ""
    columns = ", ".join(
        f"{prefix}{connection.ops.quote_name(field.column)}" for field in Notification._meta.concrete_fields
    )
    return (
        f"UPDATE {_TABLE} AS n SET status = CASE ({reason}) WHEN '' THEN %s WHEN %s THEN %s ELSE %s END, "
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
    goes `cancelled` with the reason in last_error_code instead of `sending`, and no attempt is used;
    and that its address has no active Suppression: if it has, the row goes `suppressed`
    (`address_suppressed`), no attempt used and no provider called.
    One `UPDATE … RETURNING`: the claim, the check and the row in a single round trip.
    """
    postgres = connection.vendor == "postgresql"
    now = [] if postgres else [timezone.now()]
    stale_claim = (
        settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS
        if postgres
        else timezone.now() - dt.timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS)
    )
    reason = [*_STALE_PARAMS[:5], *now, _STALE_PARAMS[5], Notification.Channel.EMAIL, SUPPRESSED_REASON]
    with connection.cursor() as cursor:
        cursor.execute(
            _claim_statement(connection.vendor),
            [
                *reason,
                Status.SENDING,
                SUPPRESSED_REASON,
                Status.SUPPRESSED,
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
    updated = claim_held(notification.id, notification.attempts).update(
        status=status, updated_at=timezone.now(), **fields
    )
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
    "template_version_id = %s, last_error_code = '', last_error_message = '' "
    "WHERE id = %s AND status = %s AND attempts = %s"
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
                template_version_id=notification.template_version_id,
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
        notification.template_version_id,
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


def notification_send(*, notification_id: str) -> SendResult:
    """Claim, send through the channel's providers, record the outcome (module docstring).

    Temporary failures leave the row `retrying` and are re-raised for Dramatiq's Retries middleware.
    A row that should not be sent any more (_claim) ends `cancelled` with its reason.
    """
    claimed = time.monotonic()
    notification = _claim(notification_id)
    if notification is not None and notification.status in (Status.CANCELLED, Status.SUPPRESSED):
        return _not_sent(notification)
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


def _not_sent(notification: Notification) -> SendResult:
    """The claim found the message stale (_STALE_REASON) and made the row `cancelled`, or its address
    suppressed and made it `suppressed`: say why, for staff. A crash before this leaves the reason's
    code without its sentence; the outbox row is gone with the relay's publish or this discard."""
    reason, status = notification.last_error_code, notification.status
    Notification.objects.filter(id=notification.id, status=status).update(
        last_error_message=STALE_MESSAGES.get(reason, reason)
    )
    outbox_discard(notification.id)
    metrics.NOTIFICATIONS.labels(kind=notification.kind, channel=notification.channel, status=status).inc()
    log.info(
        "notification.cancelled_at_send" if status == Status.CANCELLED else "notification.suppressed_at_send",
        notification_id=str(notification.id),
        kind=notification.kind,
        channel=notification.channel,
        reason=reason,
    )
    return SendResult(outcome=status, notification_id=str(notification.id))


def _portal_id(notification: Notification) -> int | None:
    """The notification's portal, for wording of its own: one primary-key join, asked only while
    some portal has such wording (rendering.needs_portal), so the usual send makes no extra query."""
    return Notification.objects.filter(id=notification.id).values_list("registration__portal_id", flat=True).first()


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
        rendered = rendering.render(
            kind=notification.kind,
            channel=notification.channel,
            context=notification.context,
            portal_id=_portal_id(notification) if rendering.needs_portal() else None,
        )
        # Written with `sent` (_SENT_SET): the wording this message went out with.
        notification.template_version_id = rendered.template_version_id
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
        kind=notification.kind,
        context=notification.context,
    )
    misconfigured_error: ProviderError | None = None
    for _ in range(len(providers)):  # a misconfigured provider hands the same send to the next one
        route = deferral.route(providers)
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
    outcome = notification_defer(
        notification, blocked=route, providers=providers, tried=misconfigured_error, log_context=log_context
    )
    return SendResult(outcome=outcome, notification_id=str(notification.id))


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
    # may have the message (ProviderOutcomeUnknownError). A refusal of the address at hand-over is a
    # bounce, recorded as the delivery report it is (bounced or suppressed, never dead).
    refused = failure in classification.REFUSED_AT_HANDOVER
    permanent = refused or failure in (FailureClass.MESSAGE_PERMANENT, FailureClass.OUTCOME_UNKNOWN)
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
    if refused:
        _refused_at_handover(notification, provider, error, failure)
        outcome = Status.SUPPRESSED if failure == FailureClass.RECIPIENT_OPTED_OUT else Status.BOUNCED
        return SendResult(outcome=outcome, notification_id=str(notification.id))
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


def _refused_at_handover(
    notification: Notification, provider: Provider, error: ProviderError, failure: FailureClass
) -> None:
    """The recipient's side refused the address for good as we handed the message over: the same
    DeliveryReport a DSN would bring later, through the same service (delivery.py)."""
    rule = error.details if isinstance(error.details, classification.Rule) else None
    protocol = rule.protocol if rule is not None else notification.channel
    source = {"smtp": "smtp", "sms": "sms_api"}.get(protocol, f"esp:{provider.name}")
    notification_refused_at_handover(
        notification_id=notification.id,
        claim=notification.attempts,
        opted_out=failure == FailureClass.RECIPIENT_OPTED_OUT,
        report=DeliveryReport(
            source=source,
            outcome=ReportOutcome.BOUNCED,
            permanent=True,
            status_code=error.remote_status or error.code,
            diagnostic=error.diagnostic or error.message,
            reported_at=timezone.now(),
            details={"provider": provider.name, "error_code": error.code, "stage": rule.stage if rule else ""},
        ),
    )


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
