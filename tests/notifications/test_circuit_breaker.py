"""The circuit breaker's transitions, shared through PostgreSQL, and the deferral of sends."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import pytest
from django.db import connection
from django.utils import timezone
from prometheus_client import REGISTRY

from apps.notifications.breakers import Permit, circuit_breaker_permit, circuit_breaker_record
from apps.notifications.classification import FailureClass
from apps.notifications.models import CircuitBreaker, Notification
from apps.notifications.services import notification_send
from apps.outbox.models import OutboxMessage
from tests.support.smtp import SmtpServer

ALLOWED = Permit(allowed=True)


def fail(provider: str = "email", times: int = 1) -> None:
    for _ in range(times):
        circuit_breaker_record(
            provider=provider,
            permit=circuit_breaker_permit(provider=provider),
            failure_class=FailureClass.PROVIDER_DOWN,
        )


def breaker(provider: str = "email") -> CircuitBreaker:
    return CircuitBreaker.objects.get(provider=provider)


def gauge(provider: str) -> float:
    return REGISTRY.get_sample_value("eventplatform_circuit_breaker_open", {"provider": provider})


def age(provider: str, seconds: float) -> None:
    """Pretend the breaker opened (and its probe was claimed) `seconds` ago."""
    past = timezone.now() - dt.timedelta(seconds=seconds)
    CircuitBreaker.objects.filter(provider=provider).update(opened_at=past, probe_claimed_at=past)


@pytest.mark.django_db
def test_opens_after_n_consecutive_transient_failures(settings) -> None:
    settings.NOTIFICATION_BREAKER_THRESHOLD = 3
    fail(times=2)
    assert (breaker().state, breaker().consecutive_failures) == ("closed", 2)
    fail()
    assert breaker().state == "open" and gauge("email") == 1
    permit = circuit_breaker_permit(provider="email")
    assert not permit.allowed and 0 < permit.retry_in <= settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS


@pytest.mark.django_db
def test_a_success_resets_the_count_and_permanent_refusals_do_not_count(settings) -> None:
    settings.NOTIFICATION_BREAKER_THRESHOLD = 3
    fail(times=2)
    circuit_breaker_record(provider="email", permit=ALLOWED, failure_class=None)
    fail(times=2)
    assert (breaker().state, breaker().consecutive_failures) == ("closed", 2)


@pytest.mark.django_db
def test_after_the_cool_down_one_probe_decides(settings) -> None:
    settings.NOTIFICATION_BREAKER_THRESHOLD = 1
    fail()
    age("email", settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS + 1)

    probe = circuit_breaker_permit(provider="email")
    assert probe == Permit(allowed=True, probe=True) and breaker().state == "half_open"
    assert not circuit_breaker_permit(provider="email").allowed  # only one probe at a time

    circuit_breaker_record(provider="email", permit=probe, failure_class=FailureClass.PROVIDER_DOWN)
    assert breaker().state == "open" and not circuit_breaker_permit(provider="email").allowed

    age("email", settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS + 1)
    probe = circuit_breaker_permit(provider="email")
    circuit_breaker_record(provider="email", permit=probe, failure_class=None)
    assert (breaker().state, breaker().consecutive_failures, breaker().opened_at) == ("closed", 0, None)
    assert circuit_breaker_permit(provider="email") == ALLOWED and gauge("email") == 0


@pytest.mark.django_db
def test_a_probe_whose_worker_died_is_taken_over_after_the_probe_timeout(settings) -> None:
    settings.NOTIFICATION_BREAKER_THRESHOLD = 1
    fail()
    age("email", settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS + 1)
    assert circuit_breaker_permit(provider="email").probe  # ... and its worker is killed
    assert not circuit_breaker_permit(provider="email").allowed
    age("email", settings.NOTIFICATION_BREAKER_PROBE_TIMEOUT_SECONDS + 1)
    assert circuit_breaker_permit(provider="email").probe


@pytest.mark.django_db(transaction=True)
def test_of_many_concurrent_workers_exactly_one_gets_the_probe(settings) -> None:
    settings.NOTIFICATION_BREAKER_THRESHOLD = 1
    fail()
    age("email", settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS + 1)
    start, permits = threading.Barrier(8), []

    def worker() -> None:
        try:
            start.wait()
            permits.append(circuit_breaker_permit(provider="email"))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(p.probe for p in permits) == 1 and sum(p.allowed for p in permits) == 1


@pytest.mark.django_db
def test_breakers_are_per_provider(settings) -> None:
    settings.NOTIFICATION_BREAKER_THRESHOLD = 1
    fail("sms")
    assert circuit_breaker_permit(provider="email").allowed
    assert not circuit_breaker_permit(provider="sms").allowed


@pytest.mark.django_db
def test_an_open_breaker_defers_the_send_without_using_an_attempt(
    settings, email_via_smtp: SmtpServer, make_notification: Callable[..., Notification]
) -> None:
    settings.NOTIFICATION_BREAKER_THRESHOLD = 1
    settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS = 30
    notification = make_notification()
    fail()

    result = notification_send(notification_id=str(notification.id))

    notification.refresh_from_db()
    assert result.outcome == "deferred"
    assert (notification.status, notification.attempts, notification.last_error_code) == ("pending", 0, "circuit_open")
    assert notification.claimed_at is None and notification.attempt_log.count() == 0
    assert email_via_smtp.handler.refused == 0 and email_via_smtp.messages == []
    # It waits in PostgreSQL: no outbox row of its own (only its creation's), one probe for the channel
    assert notification.deferred_at is not None and notification.next_attempt_at is None
    assert OutboxMessage.objects.filter(kwargs__notification_id=str(notification.id)).count() == 1
    [probe] = OutboxMessage.objects.filter(actor_name="notification_probe")
    wait = (probe.available_at - probe.created_at).total_seconds()
    assert probe.kwargs == {"channel": "email"} and 28 < wait <= 31


@pytest.mark.django_db
def test_a_deferral_past_the_retry_horizon_is_dead(
    settings, email_via_smtp: SmtpServer, make_notification: Callable[..., Notification]
) -> None:
    settings.NOTIFICATION_BREAKER_THRESHOLD = 1
    settings.NOTIFICATION_RETRY_HORIZON_SECONDS = 0
    notification = make_notification()
    fail()

    assert notification_send(notification_id=str(notification.id)).outcome == "dead"
    notification.refresh_from_db()
    assert (notification.status, notification.attempts, notification.last_error_code) == ("dead", 0, "circuit_open")


@pytest.mark.django_db
def test_support_sees_the_breakers_in_the_admin(client, settings) -> None:
    from django.contrib.auth.models import User

    settings.NOTIFICATION_BREAKER_THRESHOLD = 1
    fail("sms")
    client.force_login(User.objects.create_superuser("support", "support@example.org", "pw"))
    response = client.get("/admin/notifications/circuitbreaker/")
    assert response.status_code == 200 and b"sms" in response.content and b"open" in response.content
