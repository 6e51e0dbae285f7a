"""Notification lifecycle: create (with its outbox row), claim, send, record, dead-letter, replay."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.notifications import rendering
from apps.notifications.errors import NotificationBusy, ProviderPermanentError, ProviderTransientError
from apps.notifications.models import Notification, NotificationAttempt
from apps.notifications.providers import OutgoingMessage, provider_for
from apps.outbox.services import outbox_enqueue
from eventplatform import metrics
from eventplatform.logging import mask_email, mask_phone

log = structlog.get_logger("notifications")

CLAIMABLE = (Notification.Status.PENDING, Notification.Status.RETRYING)


def _enqueue_send(notification: Notification, *, delay: dt.timedelta | None = None) -> None:
    outbox_enqueue(
        actor_name="notification_send",
        queue_name="notifications",
        kwargs={"notification_id": str(notification.id)},
        correlation_id=notification.correlation_id or None,
        delay=delay,
    )


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


def notifications_cancel_pending(*, registration: Any, kinds: tuple[str, ...]) -> int:
    """Cancel not-yet-sent notifications of these kinds (a cancelled registration gets no reminders)."""
    return Notification.objects.filter(registration=registration, kind__in=kinds, status__in=CLAIMABLE).update(
        status=Notification.Status.CANCELLED, updated_at=timezone.now()
    )


def _claim(notification_id: str) -> Notification | None:
    """Guarded transition to `sending`: of two workers holding copies of one message, one wins.

    A `sending` row whose claim is older than NOTIFICATION_CLAIM_TIMEOUT_SECONDS belonged to a
    worker that died mid-send; it may be claimed again (the documented duplicate window).
    """
    now = timezone.now()
    stale = now - dt.timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS)
    claimed = Notification.objects.filter(
        Q(status__in=CLAIMABLE) | Q(status=Notification.Status.SENDING, claimed_at__lt=stale), id=notification_id
    ).update(status=Notification.Status.SENDING, claimed_at=now, attempts=F("attempts") + 1, updated_at=now)
    return Notification.objects.get(id=notification_id) if claimed else None


@dataclass(frozen=True)
class SendResult:
    outcome: str  # sent | dead | skipped
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


def _finish(notification: Notification, status: str, **fields: Any) -> None:
    Notification.objects.filter(id=notification.id, status=Notification.Status.SENDING).update(
        status=status, updated_at=timezone.now(), **fields
    )
    metrics.NOTIFICATIONS.labels(kind=notification.kind, channel=notification.channel, status=status).inc()


def _masked(notification: Notification) -> str:
    if notification.channel == Notification.Channel.SMS:
        return mask_phone(notification.recipient) or ""
    return mask_email(notification.recipient) or ""


def notification_send(*, notification_id: str) -> SendResult:
    """Claim, send through the channel's provider, record the attempt and the outcome.

    No transaction spans the provider call: the claim is committed first, so a crash during the
    call leaves the row `sending` with a claim time (see _claim). The one remaining duplicate
    window: the provider accepted the message and the process died before `sent` was recorded;
    the row is then re-claimed after the claim timeout and sent again, and shows two attempts.

    Transient errors leave the row `retrying` and are re-raised for Dramatiq's Retries
    middleware; permanent ones make it `dead` at once.
    """
    notification = _claim(notification_id)
    if notification is None:
        current = Notification.objects.filter(id=notification_id).values_list("status", flat=True).first()
        if current == Notification.Status.SENDING:
            raise NotificationBusy(f"Notification {notification_id} is being sent by another worker.")
        log.info("notification.skipped", notification_id=notification_id, status=current)
        return SendResult(outcome="skipped", notification_id=notification_id)

    log_context = {"notification_id": str(notification.id), "kind": notification.kind,
                   "channel": notification.channel, "recipient": _masked(notification),
                   "attempt": notification.attempts}
    started, clock = timezone.now(), time.perf_counter()
    provider_name = notification.channel
    try:
        provider = provider_for(notification.channel)
        provider_name = provider.name
        if not notification.recipient:
            raise ProviderPermanentError("The registration has no recipient for this channel.",
                                         code="invalid_recipient")
        rendered = rendering.render(kind=notification.kind, channel=notification.channel, context=notification.context)
        provider_message_id = provider.send(OutgoingMessage(
            notification_id=str(notification.id), recipient=notification.recipient, subject=rendered.subject,
            text=rendered.text, html=rendered.html,
        ))
    except ProviderPermanentError as error:
        duration = time.perf_counter() - clock
        _record_attempt(notification, started=started, duration=duration, outcome="permanent_error",
                        provider=provider_name, error=error)
        _finish(notification, Notification.Status.DEAD, last_error_code=error.code,
                last_error_message=error.message[:2000], provider=provider_name)
        metrics.DEAD_LETTERS.labels(kind=notification.kind, channel=notification.channel, error_code=error.code).inc()
        log.error("notification.dead", error_code=error.code, error=error.message, **log_context)
        return SendResult(outcome="dead", notification_id=notification_id)
    except ProviderTransientError as error:
        duration = time.perf_counter() - clock
        _record_attempt(notification, started=started, duration=duration, outcome="transient_error",
                        provider=provider_name, error=error)
        _finish(notification, Notification.Status.RETRYING, last_error_code=error.code,
                last_error_message=error.message[:2000], provider=provider_name)
        metrics.NOTIFICATION_RETRIES.labels(channel=notification.channel).inc()
        log.warning("notification.transient_failure", error_code=error.code, error=error.message, **log_context)
        raise
    duration = time.perf_counter() - clock
    _record_attempt(notification, started=started, duration=duration, outcome="sent", provider=provider_name,
                    provider_message_id=provider_message_id)
    now = timezone.now()
    _finish(notification, Notification.Status.SENT, sent_at=now, provider=provider_name,
            provider_message_id=provider_message_id, last_error_code="", last_error_message="")
    metrics.NOTIFICATION_SEND_SECONDS.labels(channel=notification.channel).observe(duration)
    if notification.source_received_at:
        metrics.NOTIFICATION_END_TO_END_SECONDS.labels(kind=notification.kind, channel=notification.channel).observe(
            (now - notification.source_received_at).total_seconds())
    log.info("notification.sent", duration_ms=int(duration * 1000), **log_context)
    return SendResult(outcome="sent", notification_id=notification_id)


def notification_mark_dead(*, notification_id: str, error_code: str, error_message: str) -> bool:
    """Final failure after retries are exhausted; the database keeps it (RabbitMQ's XQ drops after 7 days)."""
    updated = Notification.objects.filter(
        id=notification_id, status__in=(Notification.Status.RETRYING, Notification.Status.SENDING,
                                        Notification.Status.PENDING)
    ).update(status=Notification.Status.DEAD, last_error_code=error_code,
             last_error_message=error_message[:2000], updated_at=timezone.now())
    if updated:
        notification = Notification.objects.get(id=notification_id)
        metrics.NOTIFICATIONS.labels(kind=notification.kind, channel=notification.channel, status="dead").inc()
        metrics.DEAD_LETTERS.labels(kind=notification.kind, channel=notification.channel, error_code=error_code).inc()
        log.error("notification.dead", notification_id=notification_id, error_code=error_code,
                  attempts=notification.attempts, kind=notification.kind, channel=notification.channel)
    return bool(updated)


@transaction.atomic
def notification_replay(*, notification_id: uuid.UUID | str, include_sent: bool = False) -> bool:
    """Staff replay: a dead (or, explicitly, a sent) notification goes back to pending and is queued."""
    statuses = [Notification.Status.DEAD] + ([Notification.Status.SENT] if include_sent else [])
    notification = Notification.objects.select_for_update().filter(id=notification_id, status__in=statuses).first()
    if notification is None:
        return False
    Notification.objects.filter(id=notification.id).update(
        status=Notification.Status.PENDING, claimed_at=None, updated_at=timezone.now()
    )
    _enqueue_send(notification)
    log.info("notification.replayed", notification_id=str(notification.id), previous_status=notification.status)
    return True
