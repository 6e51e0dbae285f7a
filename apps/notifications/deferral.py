"""Deferral: what sends do while every provider of their channel is refused by its circuit breaker,
in the order it happens. breakers.py is the breaker itself (its states and guarded transitions);
this module is the waiting around it.

1. Route (`route`): a send asks the breakers of its channel's providers, in order of preference
   (the primary, then the fallback); the first that lets it through is used. None does: `Blocked`,
   with how long until one may.
2. Wait (`notification_defer`): the send hands its claim back and waits in PostgreSQL
   (`deferred_at`), with no outbox row and no attempt used, and ONE probe message per channel is
   scheduled for when the first breaker may let a send through. Past the retry horizon a send
   waiting for a provider that is down is dead; one waiting for a misconfigured provider never is
   (an operator is needed, and the alert says so).
3. Probe (`notifications_probe`, the probe actor): the longest-waiting send goes through the usual
   routing, so it claims the breaker's probe. A success closes the breaker (step 4); a provider
   still down leaves it waiting again, and the next probe is scheduled.
4. Wake (`notifications_wake_deferred`): whoever closes a breaker (a probe's send, in sending.py)
   queues the channel's waiting sends again, in batches, spread at WAKE_PER_SECOND so that the
   provider that just recovered is not hit by thousands in the same second.
5. Rescue (`notifications_rescue_deferred`, the scheduler's sweep): a wake-up that was lost (a
   crash after the breaker closed) is done now; a probe message that was lost is queued again.

Crash windows: each step commits its rows and its outbox row together, so a crash before COMMIT
leaves things as they were: a send being deferred stays `sending` and its redelivered message
re-claims it after the claim timeout; sends being woken keep waiting for the next sweep (step 5).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.notifications import channels, classification, queueing
from apps.notifications.breakers import (
    Permit,
    circuit_breaker_lets_through,
    circuit_breaker_permit,
    circuit_breaker_probe_started,
    circuit_breaker_schedule_probe,
)
from apps.notifications.classification import FailureClass
from apps.notifications.errors import NotificationBusy, ProviderError, ProviderTransientError
from apps.notifications.failures import horizon_passed, notification_mark_dead
from apps.notifications.models import CLAIMABLE, Notification, claim_held
from apps.notifications.providers import Provider
from eventplatform import metrics, sql

log = structlog.get_logger("notifications")

Status = Notification.Status
WAKE_PER_SECOND = 200
WAKE_BATCH = 1000


# --- 1. Route


@dataclass(frozen=True)
class Blocked:
    """Every provider of the channel refused by its breaker."""

    retry_in: float
    misconfigured: bool


def route(providers: list[Provider]) -> tuple[Provider, Permit] | Blocked:
    """The first provider whose breaker lets a send through, or how long until one may."""
    refusals = []
    for provider in providers:
        permit = circuit_breaker_permit(provider=provider.name)
        if permit.allowed:
            return provider, permit
        refusals.append(permit)
    return Blocked(retry_in=min(p.retry_in for p in refusals), misconfigured=any(p.misconfigured for p in refusals))


# --- 2. Wait


def notification_defer(
    notification: Notification,
    *,
    blocked: Blocked,
    providers: list[Provider],
    tried: ProviderError | None,
    log_context: dict[str, Any],
) -> str:
    """Every provider's breaker is refusing: hand the claim back (no attempt used unless a provider
    was called in this run: `tried`, a misconfigured one) and let the send wait in PostgreSQL, with
    no outbox row of its own. Returns `deferred`, or `dead` past the retry horizon.

    One probe message per channel is queued for when the first breaker may let a send through
    (circuit_breaker_schedule_probe claims the right to queue it). The release and the probe's
    outbox row commit together: a crash before COMMIT leaves the row `sending`, and the
    unacknowledged message is redelivered and re-claims it after the claim timeout.
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
        return "dead"
    error_code = tried.code if tried else ("provider_misconfigured" if misconfigured else "circuit_open")
    retry_in = dt.timedelta(seconds=blocked.retry_in + random.uniform(0, 1))
    with transaction.atomic():
        released = claim_held(notification.id, notification.attempts).update(
            status=Status.RETRYING if notification.attempts > 1 else Status.PENDING,
            updated_at=now,
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
    return "deferred"


# --- 3. Probe


def notifications_probe(*, channel: str, send: Callable[..., Any]) -> str:
    """The channel's probe message: send the longest-waiting deferred notification now.

    `send` is sending.notification_send, handed in by the probe actor (sending.py imports this
    module, so this module does not import it). Its send goes through the usual routing, so it
    claims the breaker's probe; a success closes the breaker and wakes every waiting send of the
    channel, a failure defers it again (queueing the next probe). Nothing waiting: nothing to probe
    with, and the next new send probes by itself. Returns the probe's outcome (sent | deferred |
    dead | retrying | nothing_waiting | skipped | not_configured).
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
        return str(send(notification_id=str(waiting.id)).outcome)
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


# --- 4. Wake


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


# --- 5. Rescue


def notifications_rescue_deferred(*, now: dt.datetime) -> int:
    """Sends waiting for a breaker: wake those whose channel lets sends through again; for the
    others, make sure one probe message is on its way (it may have been lost)."""
    woken = 0
    waiting_channels = (
        Notification.objects.filter(deferred_at__isnull=False, status__in=CLAIMABLE)
        .values_list("channel", flat=True)
        .distinct()
    )
    for channel in list(waiting_channels):
        try:
            providers = channels.providers_for(channel)
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
