"""Delivery through the real path: outbox -> RabbitMQ -> Dramatiq worker -> aiosmtpd / SMS stand-in.

Retries, retry rounds past Dramatiq's retries, dead letters and the circuit breaker, with backoffs
shrunk to milliseconds (see the `fast_retries` fixture).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.notifications.models import CircuitBreaker, Notification
from apps.outbox.models import OutboxMessage
from tests.notifications.conftest import InProcessPipeline
from tests.support.polling import wait_until
from tests.support.sms import SmsApi
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.django_db(transaction=True)

Make = Callable[..., Notification]


def finished(notification: Notification) -> Notification | None:
    """Sent or dead, with its history written (`sent` is committed before the attempt row)."""
    notification.refresh_from_db()
    if notification.status == "sent" and not notification.attempt_log.filter(outcome="sent").exists():
        return None
    return notification if notification.status in ("sent", "dead") else None


def history(notification: Notification) -> list[tuple[int, str, str]]:
    return [(a.number, a.outcome, a.error_code) for a in notification.attempt_log.order_by("number")]


def test_two_transient_failures_then_success_is_sent_after_three_attempts(
    email_via_smtp: SmtpServer, pipeline: InProcessPipeline, make_notification: Make
) -> None:
    email_via_smtp.handler.scripted_replies.extend(["451 4.3.0 try again later", "421 4.7.0 busy"])
    notification = make_notification()

    wait_until(lambda: finished(notification), what="the notification to finish")

    assert (notification.status, notification.attempts, notification.last_error_code) == ("sent", 3, "")
    assert history(notification) == [
        (1, "transient_error", "smtp_message_deferred"),
        (2, "transient_error", "smtp_service_unavailable"),
        (3, "sent", ""),
    ]
    assert [m["X-Eventplatform-Notification-Id"] for m in email_via_smtp.messages] == [str(notification.id)]
    assert notification.attempt_log.get(number=3).provider_message_id == notification.provider_message_id != ""


def test_sms_transient_failures_are_retried_too(
    sms_via_api: SmsApi, pipeline: InProcessPipeline, make_notification: Make
) -> None:
    sms_via_api.scripted_statuses.extend([503, 429])
    notification = make_notification(channel="sms")

    wait_until(lambda: finished(notification), what="the SMS to finish")

    assert (notification.status, notification.attempts) == ("sent", 3)
    assert history(notification) == [
        (1, "transient_error", "sms_transient"),
        (2, "transient_error", "sms_transient"),
        (3, "sent", ""),
    ]
    assert [m["To"] for m in sms_via_api.received] == ["+4915112345678"]
    assert notification.provider_message_id.startswith("SM")


@pytest.mark.parametrize(
    ("reply", "code"),
    [("550 5.1.1 mailbox unavailable", "smtp_message_rejected"), ("554 5.7.1 rejected", "smtp_message_rejected")],
)
def test_permanent_failure_is_dead_after_one_attempt_with_its_code(
    email_via_smtp: SmtpServer, pipeline: InProcessPipeline, make_notification: Make, reply: str, code: str
) -> None:
    email_via_smtp.handler.scripted_replies.append(reply)
    notification = make_notification()

    wait_until(lambda: finished(notification), what="the notification to finish")
    time.sleep(0.5)  # a retry would come within this window

    assert (notification.status, notification.attempts, notification.last_error_code) == ("dead", 1, code)
    assert reply.split(" ", 1)[1] in notification.last_error_message
    assert history(notification) == [(1, "permanent_error", code)]
    assert email_via_smtp.handler.refused == 1 and email_via_smtp.messages == []


def test_sms_4xx_is_permanent(sms_via_api: SmsApi, pipeline: InProcessPipeline, make_notification: Make) -> None:
    sms_via_api.scripted_statuses.append(400)
    notification = make_notification(channel="sms")

    wait_until(lambda: finished(notification), what="the SMS to finish")

    assert (notification.status, notification.attempts, notification.last_error_code) == ("dead", 1, "sms_permanent")
    assert sms_via_api.calls == 1


def test_retry_rounds_through_the_outbox_outlast_dramatiqs_retries(
    settings, email_via_smtp: SmtpServer, pipeline: InProcessPipeline, make_notification: Make
) -> None:
    # Given Dramatiq may retry a message once (2 tries per round) and the server refuses 5 times
    settings.NOTIFICATION_MAX_RETRIES = 1
    settings.NOTIFICATION_BREAKER_THRESHOLD = 100  # rounds only, no breaker deferrals in this story
    email_via_smtp.handler.scripted_replies.extend(["451 4.3.0 later"] * 5)
    notification = make_notification()

    # When the rounds run (each scheduled by the dead-letter actor through a delayed outbox row)
    wait_until(lambda: finished(notification), timeout=45, what="the notification to finish")

    # Then it is delivered on the 6th try, in the 3rd round, and never marked dead on the way
    assert (notification.status, notification.attempts, notification.next_attempt_at) == ("sent", 6, None)
    assert [outcome for _, outcome, _ in history(notification)] == ["transient_error"] * 5 + ["sent"]
    sends = OutboxMessage.objects.filter(
        actor_name="notification_send", kwargs__notification_id=str(notification.id)
    ).order_by("created_at")
    assert sends.count() == 3  # the creation's row and two rounds
    first, *rounds = sends
    assert all((row.available_at - row.created_at).total_seconds() >= 0.99 for row in rounds)
    assert len(email_via_smtp.messages) == 1


def test_past_the_retry_horizon_exhausted_retries_make_it_dead(
    settings, email_via_smtp: SmtpServer, pipeline: InProcessPipeline, make_notification: Make
) -> None:
    settings.NOTIFICATION_MAX_RETRIES = 1
    settings.NOTIFICATION_RETRY_HORIZON_SECONDS = 0
    settings.NOTIFICATION_BREAKER_THRESHOLD = 100
    email_via_smtp.handler.refuse_all_with = "451 4.3.0 later"
    notification = make_notification()

    wait_until(lambda: finished(notification), what="the notification to finish")

    assert (notification.status, notification.attempts, notification.last_error_code) == (
        "dead",
        2,
        "smtp_message_deferred",
    )
    assert notification.last_error_message.startswith("Retries exhausted")


def test_provider_down_opens_the_breaker_defers_without_calling_it_and_delivers_everything_after(
    settings, email_via_smtp: SmtpServer, pipeline: InProcessPipeline, make_notification: Make
) -> None:
    # Given the SMTP server refuses everything, breaker threshold 3, cool-down 1 s
    settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS = 1.0
    handler = email_via_smtp.handler
    handler.refuse_all_with = "421 4.3.2 service shutting down"
    notifications = [make_notification() for _ in range(10)]

    # When the failures pile up, the breaker opens
    wait_until(lambda: CircuitBreaker.objects.filter(provider="email", state="open").exists(), what="open breaker")
    # Then, while it stays open, the server is called only by the one probe per cool-down
    calls_before = handler.refused
    time.sleep(3)
    assert handler.refused - calls_before <= 4, "the provider was called while the breaker was open"
    waiting = Notification.objects.filter(id__in=[n.id for n in notifications])
    assert not waiting.filter(status="dead").exists()
    assert waiting.filter(last_error_code="circuit_open").exists()

    # When the provider recovers
    handler.refuse_all_with = None
    wait_until(lambda: waiting.filter(status="sent").count() == 10, timeout=30, what="all ten sent")

    # Then everything is delivered exactly once, nothing died, the breaker closed again
    assert sorted(m["X-Eventplatform-Notification-Id"] for m in email_via_smtp.messages) == sorted(
        str(n.id) for n in notifications
    )
    assert CircuitBreaker.objects.get(provider="email").state == "closed"
    # Deferrals used no attempts: the attempt count equals the history's length for each.
    for notification in waiting:
        assert notification.attempts == notification.attempt_log.count()
    total_attempts = sum(n.attempts for n in waiting)
    assert total_attempts < 10 + 3 + 6, f"{total_attempts} attempts: the breaker did not hold the sends back"


def test_while_the_primary_is_open_the_fallback_provider_sends(
    settings, email_via_smtp: SmtpServer, pipeline: InProcessPipeline, make_notification: Make
) -> None:
    fallback = SmtpServer().start()
    try:
        settings.EMAIL_FALLBACK_URL = fallback.url
        settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS = 60  # primary stays open for the whole test
        CircuitBreaker.objects.create(provider="email", state="open", consecutive_failures=3, opened_at=timezone.now())
        notification = make_notification()

        wait_until(lambda: finished(notification), what="the notification to finish")

        assert (notification.status, notification.provider, notification.attempts) == ("sent", "email_fallback", 1)
        assert len(fallback.messages) == 1 and email_via_smtp.messages == []
    finally:
        fallback.stop()


def test_a_replayed_dead_notification_is_delivered(
    email_via_smtp: SmtpServer, pipeline: InProcessPipeline, make_notification: Make
) -> None:
    email_via_smtp.handler.scripted_replies.append("550 5.1.1 mailbox unavailable")
    notification = make_notification()
    wait_until(lambda: finished(notification), what="the notification to die")
    assert notification.status == "dead"

    call_command("replay_notifications", "--id", str(notification.id), "--reason", "smtp fixed", stdout=io.StringIO())
    wait_until(lambda: finished(notification) and notification.status == "sent", what="the replayed send")
    assert history(notification) == [(1, "permanent_error", "smtp_message_rejected"), (2, "sent", "")]
    assert len(email_via_smtp.messages) == 1
