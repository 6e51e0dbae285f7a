"""A provider's 429 with Retry-After (issue 17, item 9): the send waits as long as asked (bounded),
through the real relay, RabbitMQ and a Dramatiq worker; the provider is working, so its breaker
neither counts it nor cools down its fixed 30 s. Counted at the SMS stand-in."""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Callable

import pytest

from apps.notifications.breakers import circuit_breaker_cache_clear
from apps.notifications.failures import rate_limit_delay_ms
from apps.notifications.models import CircuitBreaker, Notification
from tests.notifications.conftest import InProcessPipeline
from tests.support.polling import wait_until
from tests.support.sms import SmsApi

pytestmark = pytest.mark.django_db(transaction=True)

TOO_MANY = (429, {"code": 20429, "message": "Too Many Requests", "status": 429}, {"Retry-After": "2"})


def test_429_with_retry_after_defers_each_send_and_leaves_the_breaker_closed(
    sms_via_api: SmsApi,
    pipeline: InProcessPipeline,
    make_notification: Callable[..., Notification],
    make_registration: Callable[..., object],
) -> None:
    # Given an SMS API that answers the next 20 requests 429, Retry-After: 2
    circuit_breaker_cache_clear()
    sms_via_api.scripted_replies.extend([TOO_MANY] * 20)
    # When 20 SMS are sent through the pipeline (breaker threshold 3, cool-down 1 s: fast_retries)
    notifications = [
        make_notification(channel="sms", registration=make_registration(phone=f"+49151123456{i:02}")) for i in range(20)
    ]
    ids = [n.id for n in notifications]
    wait_until(
        lambda: Notification.objects.filter(id__in=ids, status="sent").count() == 20, timeout=60, what="every SMS sent"
    )
    # Then each arrived exactly once, after the wait the provider asked for
    assert collections.Counter(form["To"] for form in sms_via_api.received) == {
        f"+49151123456{i:02}": 1 for i in range(20)
    }
    for notification in notifications:
        first, second = notification.attempt_log.order_by("number")
        assert (first.error_code, second.outcome) == ("sms_rate_limited", "sent")
        assert second.started_at - first.started_at >= dt.timedelta(seconds=2)
    # ... and the breaker never counted a failure
    assert CircuitBreaker.objects.filter(provider="sms").values_list(
        "state", "consecutive_failures", "opened_at"
    ).get() == ("closed", 0, None)


def test_the_wait_is_bounded(settings) -> None:
    settings.NOTIFICATION_RATE_LIMIT_MAX_WAIT_SECONDS = 60
    assert 2000 <= rate_limit_delay_ms(2) <= 2200
    assert 60_000 <= rate_limit_delay_ms(86_400) <= 66_000
