"""Circuit breakers per provider, shared by every worker process through PostgreSQL.

Why PostgreSQL: the state must be the same for all workers on all machines, the database is
already a hard dependency (Redis is not, and the embedded mode has none), and a breaker changes
state rarely, so a row per provider costs one indexed SELECT per send.

closed --N consecutive transient failures--> open --cool-down passed, one probe claimed--> half_open
half_open --probe succeeds--> closed;  half_open --probe fails--> open (a new cool-down)

Every transition is a guarded UPDATE (`... WHERE state = <expected>`): of two processes racing for
the same transition, one changes the row and the other sees 0 rows updated.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import structlog
from django.conf import settings
from django.db.models import F
from django.utils import timezone

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


def _export(provider: str, state: str) -> None:
    metrics.BREAKER_STATE.labels(provider=provider).set(0 if state == State.CLOSED else 1)


def _claim_probe(provider: str, now: dt.datetime, *, state: str, **guard: object) -> bool:
    claimed = CircuitBreaker.objects.filter(provider=provider, state=state, **guard).update(
        state=State.HALF_OPEN, probe_claimed_at=now, updated_at=now)
    return bool(claimed)


def circuit_breaker_permit(*, provider: str) -> Permit:
    """May a send go to this provider now? At most one probe at a time while half-open.

    A half-open breaker whose probe was claimed longer than NOTIFICATION_BREAKER_PROBE_TIMEOUT_SECONDS
    ago lost its prober (process killed mid-call): the probe may be claimed again.
    """
    if _trusted_closed(provider):
        return Permit(allowed=True)
    breaker, _ = CircuitBreaker.objects.get_or_create(provider=provider)
    _export(provider, breaker.state)
    if breaker.state == State.CLOSED:
        if breaker.consecutive_failures == 0:
            _closed_since[provider] = time.monotonic()
        return Permit(allowed=True)
    _closed_since.pop(provider, None)
    now = timezone.now()
    cooldown = dt.timedelta(seconds=settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS)
    if breaker.state == State.OPEN:
        reopen_at = (breaker.opened_at or now) + cooldown
        if now < reopen_at:
            return Permit(allowed=False, retry_in=(reopen_at - now).total_seconds())
        if _claim_probe(provider, now, state=State.OPEN, opened_at__lte=now - cooldown):
            log.info("circuit_breaker.half_open", provider=provider)
            return Permit(allowed=True, probe=True)
        return Permit(allowed=False, retry_in=PROBE_WAIT_SECONDS)
    stale = now - dt.timedelta(seconds=settings.NOTIFICATION_BREAKER_PROBE_TIMEOUT_SECONDS)
    if _claim_probe(provider, now, state=State.HALF_OPEN, probe_claimed_at__lt=stale):
        log.warning("circuit_breaker.probe_taken_over", provider=provider, error_code="circuit_open")
        return Permit(allowed=True, probe=True)
    return Permit(allowed=False, retry_in=PROBE_WAIT_SECONDS)


def circuit_breaker_record(*, provider: str, permit: Permit, failed: bool) -> None:
    """Count the outcome of a send. `failed` means a transient failure (the provider is unwell);
    a permanent refusal is an answer, so it counts as the provider working.
    """
    now = timezone.now()
    breakers = CircuitBreaker.objects.filter(provider=provider)
    if permit.probe:
        if failed:
            if breakers.filter(state=State.HALF_OPEN).update(state=State.OPEN, opened_at=now, probe_claimed_at=None,
                                                              updated_at=now):
                _export(provider, State.OPEN)
                log.warning("circuit_breaker.reopened", provider=provider, error_code="circuit_open",
                            cooldown_seconds=settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS)
        elif breakers.filter(state=State.HALF_OPEN).update(state=State.CLOSED, consecutive_failures=0, opened_at=None,
                                                            probe_claimed_at=None, updated_at=now):
            _export(provider, State.CLOSED)
            log.info("circuit_breaker.closed", provider=provider)
        return
    if not failed:
        if _trusted_closed(provider):
            return  # no failures were counted a moment ago: nothing to reset
        breakers.filter(state=State.CLOSED, consecutive_failures__gt=0).update(consecutive_failures=0, updated_at=now)
        return
    _closed_since.pop(provider, None)
    breakers.filter(state=State.CLOSED).update(consecutive_failures=F("consecutive_failures") + 1, updated_at=now)
    threshold = settings.NOTIFICATION_BREAKER_THRESHOLD
    if breakers.filter(state=State.CLOSED, consecutive_failures__gte=threshold).update(
            state=State.OPEN, opened_at=now, updated_at=now):
        _export(provider, State.OPEN)
        log.warning("circuit_breaker.opened", provider=provider, error_code="circuit_open",
                    threshold=threshold, cooldown_seconds=settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS)
