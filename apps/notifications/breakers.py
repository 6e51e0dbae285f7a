"""Circuit breakers per provider, shared by every worker process through PostgreSQL.

Why PostgreSQL: the state must be the same for all workers on all machines, the database is
already a hard dependency (Redis is not, and the embedded mode has none), and a breaker changes
state rarely, so a row per provider costs one indexed SELECT per send.

closed --N consecutive provider_down failures--> open --cool-down passed, one probe claimed--> half_open
any state --one provider_misconfigured failure--> misconfigured --probe interval passed--> half_open
half_open --probe answered (sent, or a per-message refusal)--> closed
half_open --probe provider_down--> open;  half_open --probe provider_misconfigured--> misconfigured

Only provider-wide failures count (apps/notifications/classification.py): a per-message refusal
(greylisting, no such user) is an answer from a working provider. What the sends do meanwhile is
deferral.py: they wait in PostgreSQL (Notification.deferred_at), ONE probe message per channel is
scheduled (probe_scheduled_at), and the worker whose probe closes the breaker wakes the waiting sends.

Every transition is a guarded UPDATE (`... WHERE state = <expected>`): of two processes racing for
the same transition, one changes the row and the other sees 0 rows updated.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import structlog
from django.conf import settings
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.notifications.classification import FailureClass
from apps.notifications.models import CircuitBreaker
from eventplatform import metrics

log = structlog.get_logger("notifications.breaker")

State = CircuitBreaker.State
# How soon a send denied during a probe asks again: a probe takes at most one provider timeout.
PROBE_WAIT_SECONDS = 1.0
# A closed breaker with no failures counted is trusted for this long without reading its row:
# at hundreds of sends a second the read is a round trip each. The cost is that a breaker
# opened by another process is noticed up to this much later (a few more transient failures,
# retried as usual).
CLOSED_CACHE_SECONDS = 1.0
_closed_since: dict[str, float] = {}


def circuit_breaker_cache_clear() -> None:
    """Forget what this process trusts (tests change breaker rows behind its back)."""
    _closed_since.clear()


def _trusted_closed(provider: str) -> bool:
    seen = _closed_since.get(provider)
    return seen is not None and time.monotonic() - seen < CLOSED_CACHE_SECONDS


@dataclass(frozen=True)
class Permit:
    allowed: bool
    probe: bool = False  # this send decides between closing and reopening the breaker
    retry_in: float = 0.0  # seconds until the breaker may let a send through, when not allowed
    misconfigured: bool = False  # not allowed because an operator must fix the provider


def _export(provider: str, state: str, reason: str = "") -> None:
    metrics.BREAKER_STATE.labels(provider=provider).set(0 if state == State.CLOSED else 1)
    misconfigured = state == State.MISCONFIGURED or (state == State.HALF_OPEN and bool(reason))
    metrics.BREAKER_MISCONFIGURED.labels(provider=provider).set(1 if misconfigured else 0)


def _claim_probe(provider: str, now: dt.datetime, *, state: str, **guard: object) -> bool:
    claimed = CircuitBreaker.objects.filter(provider=provider, state=state, **guard).update(
        state=State.HALF_OPEN, probe_claimed_at=now, updated_at=now
    )
    return bool(claimed)


def _wait_of(state: str) -> dt.timedelta:
    if state == State.MISCONFIGURED:
        return dt.timedelta(seconds=settings.NOTIFICATION_BREAKER_MISCONFIGURED_PROBE_SECONDS)
    return dt.timedelta(seconds=settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS)


def circuit_breaker_permit(*, provider: str) -> Permit:
    """May a send go to this provider now? At most one probe at a time while half-open.

    An open breaker lets a probe through after NOTIFICATION_BREAKER_COOLDOWN_SECONDS, a
    misconfigured one after NOTIFICATION_BREAKER_MISCONFIGURED_PROBE_SECONDS. A half-open breaker
    whose probe was claimed longer than NOTIFICATION_BREAKER_PROBE_TIMEOUT_SECONDS ago lost its
    prober (process killed mid-call): the probe may be claimed again.
    """
    if _trusted_closed(provider):
        return Permit(allowed=True)
    breaker, _ = CircuitBreaker.objects.get_or_create(provider=provider)
    _export(provider, breaker.state, breaker.reason)
    if breaker.state == State.CLOSED:
        if breaker.consecutive_failures == 0:
            _closed_since[provider] = time.monotonic()
        return Permit(allowed=True)
    _closed_since.pop(provider, None)
    now = timezone.now()
    misconfigured = breaker.state == State.MISCONFIGURED or bool(breaker.reason)
    if breaker.state in (State.OPEN, State.MISCONFIGURED):
        wait = _wait_of(breaker.state)
        reopen_at = (breaker.opened_at or now) + wait
        if now < reopen_at:
            return Permit(allowed=False, retry_in=(reopen_at - now).total_seconds(), misconfigured=misconfigured)
        if _claim_probe(provider, now, state=breaker.state, opened_at__lte=now - wait):
            log.info("circuit_breaker.half_open", provider=provider, misconfigured=misconfigured)
            return Permit(allowed=True, probe=True)
        return Permit(allowed=False, retry_in=PROBE_WAIT_SECONDS, misconfigured=misconfigured)
    stale = now - dt.timedelta(seconds=settings.NOTIFICATION_BREAKER_PROBE_TIMEOUT_SECONDS)
    if _claim_probe(provider, now, state=State.HALF_OPEN, probe_claimed_at__lt=stale):
        log.warning("circuit_breaker.probe_taken_over", provider=provider, error_code="circuit_open")
        return Permit(allowed=True, probe=True)
    return Permit(allowed=False, retry_in=PROBE_WAIT_SECONDS, misconfigured=misconfigured)


def circuit_breaker_lets_through(*, provider: str) -> bool:
    """Read-only: is the breaker closed now? (Used to decide whether waiting sends may be woken.)"""
    return CircuitBreaker.objects.filter(provider=provider, state=State.CLOSED).exists() or not (
        CircuitBreaker.objects.filter(provider=provider).exists()
    )


def circuit_breaker_record(
    *, provider: str, permit: Permit, failure_class: str | None = None, reason: str = ""
) -> bool:
    """Count the outcome of a send; True when this call closed the breaker (the caller then wakes
    the sends waiting for it).

    `failure_class` is None for a success. Only
    provider_down counts toward the threshold; provider_misconfigured opens the breaker at once in
    state `misconfigured`; a per-message refusal is an answer, so it counts as the provider working.
    """
    down = failure_class == FailureClass.PROVIDER_DOWN
    if (
        not down
        and not permit.probe
        and failure_class != FailureClass.PROVIDER_MISCONFIGURED
        and _trusted_closed(provider)
    ):
        return False  # the common success: no failures were counted a moment ago, nothing to reset
    now = timezone.now()
    breakers = CircuitBreaker.objects.filter(provider=provider)
    if failure_class == FailureClass.PROVIDER_MISCONFIGURED:
        _closed_since.pop(provider, None)
        breakers.update(
            state=State.MISCONFIGURED,
            opened_at=now,
            probe_claimed_at=None,
            reason=reason[:2000],
            misconfigured_since=Coalesce(F("misconfigured_since"), Value(now)),
            updated_at=now,
        )
        _export(provider, State.MISCONFIGURED)
        log.error(
            "circuit_breaker.misconfigured",
            provider=provider,
            error_code="provider_misconfigured",
            reason=reason[:300],
            probe_every_seconds=settings.NOTIFICATION_BREAKER_MISCONFIGURED_PROBE_SECONDS,
        )
        return False
    if permit.probe:
        if down:
            if breakers.filter(state=State.HALF_OPEN).update(
                state=State.OPEN,
                opened_at=now,
                probe_claimed_at=None,
                reason="",
                misconfigured_since=None,
                updated_at=now,
            ):
                _export(provider, State.OPEN)
                log.warning(
                    "circuit_breaker.reopened",
                    provider=provider,
                    error_code="circuit_open",
                    cooldown_seconds=settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS,
                )
            return False
        if breakers.filter(state=State.HALF_OPEN).update(
            state=State.CLOSED,
            consecutive_failures=0,
            opened_at=None,
            probe_claimed_at=None,
            reason="",
            misconfigured_since=None,
            updated_at=now,
        ):
            _export(provider, State.CLOSED)
            log.info("circuit_breaker.closed", provider=provider)
            return True
        return False
    if not down:
        breakers.filter(state=State.CLOSED, consecutive_failures__gt=0).update(consecutive_failures=0, updated_at=now)
        return False
    _closed_since.pop(provider, None)
    breakers.filter(state=State.CLOSED).update(consecutive_failures=F("consecutive_failures") + 1, updated_at=now)
    threshold = settings.NOTIFICATION_BREAKER_THRESHOLD
    if breakers.filter(state=State.CLOSED, consecutive_failures__gte=threshold).update(
        state=State.OPEN, opened_at=now, updated_at=now
    ):
        _export(provider, State.OPEN)
        log.warning(
            "circuit_breaker.opened",
            provider=provider,
            error_code="circuit_open",
            threshold=threshold,
            cooldown_seconds=settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS,
        )
    return False


def circuit_breaker_schedule_probe(*, provider: str, at: dt.datetime) -> bool:
    """Claim the right to queue the one probe message for this breaker; False when one is due
    already. A probe due longer than NOTIFICATION_BREAKER_PROBE_TIMEOUT_SECONDS ago was lost (or is
    stuck behind a backlog): another may be queued."""
    now = timezone.now()
    CircuitBreaker.objects.get_or_create(provider=provider)
    lost = now - dt.timedelta(seconds=settings.NOTIFICATION_BREAKER_PROBE_TIMEOUT_SECONDS)
    return bool(
        CircuitBreaker.objects.filter(provider=provider)
        .filter(Q(probe_scheduled_at__isnull=True) | Q(probe_scheduled_at__lt=lost))
        .update(probe_scheduled_at=at)
    )


def circuit_breaker_probe_started(*, provider: str) -> None:
    """The probe message arrived: the next deferral may schedule the next one."""
    CircuitBreaker.objects.filter(provider=provider).update(probe_scheduled_at=None)
