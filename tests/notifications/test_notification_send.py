"""notification_send and the dead-letter actor, called directly (the broker is not the point here)."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from structlog.testing import capture_logs

from apps.notifications.errors import NotificationBusy, ProviderTransientError
from apps.notifications.models import Notification, NotificationAttempt
from apps.notifications.services import notification_send, notifications_rescue_stalled
from apps.notifications.tasks import notification_dead_letter, retry_backoff_ms, retry_transient
from apps.outbox.models import OutboxMessage
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.django_db

Make = Callable[..., Notification]


@pytest.fixture
def make(email_via_smtp: SmtpServer, make_notification: Make) -> Make:
    return make_notification


def send(notification: Notification) -> str:
    return notification_send(notification_id=str(notification.id)).outcome


def rounds(notification: Notification) -> list[OutboxMessage]:
    rows = OutboxMessage.objects.filter(kwargs__notification_id=str(notification.id)).order_by("created_at")
    return list(rows)[1:]  # the first row is the creation's


def dead_letter(notification: Notification) -> None:
    """What the Retries middleware sends when a message's retries are exhausted."""
    notification_dead_letter(
        {"kwargs": {"notification_id": str(notification.id)}, "options": {"retries": 5}},
        {"retries": 5, "max_retries": 5},
    )


def test_email_carries_the_notification_id_header_and_is_recorded(email_via_smtp: SmtpServer, make: Make) -> None:
    notification = make()
    assert send(notification) == "sent"
    notification.refresh_from_db()
    (message,) = email_via_smtp.messages
    assert message["X-Eventplatform-Notification-Id"] == str(notification.id)
    assert message["Message-ID"].strip("<>") == notification.provider_message_id
    assert (notification.status, notification.attempts, notification.provider) == ("sent", 1, "email")
    assert send(notification) == "skipped"  # a redelivered message sends nothing
    assert len(email_via_smtp.messages) == 1


def test_the_attempt_row_is_committed_with_sent(email_via_smtp: SmtpServer, make: Make) -> None:
    notification = make()
    with CaptureQueriesContext(connection) as queries:
        assert send(notification) == "sent"
    (attempt,) = notification.attempt_log.all()
    assert (attempt.number, attempt.outcome, attempt.provider) == (1, "sent", "email")
    notification.refresh_from_db()
    assert attempt.provider_message_id == notification.provider_message_id
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith(("INSERT", "UPDATE", "WITH")) and "circuitbreaker" not in q["sql"]
    ]
    assert len(writes) == 2, writes  # the claim, then `sent` with its attempt row (the breaker's row is new here)


def test_an_attempt_row_the_database_refuses_never_keeps_sent_from_committing(
    email_via_smtp: SmtpServer,
    make: Make,
) -> None:
    with connection.cursor() as cursor:  # rolled back with the test's transaction
        cursor.execute(
            f"ALTER TABLE {NotificationAttempt._meta.db_table} "
            "ADD CONSTRAINT test_refuse_sent CHECK (outcome <> 'sent')"
        )
    notification = make()
    with capture_logs() as logs:
        assert send(notification) == "sent"
    notification.refresh_from_db()
    assert notification.status == "sent"
    assert notification.attempt_log.count() == 0
    assert len(email_via_smtp.messages) == 1
    failures = [e for e in logs if e.get("error_code") == "notification_bookkeeping_failed"]
    assert failures and all("test_refuse_sent" in e["error"] for e in failures)
    assert send(notification) == "skipped"  # and it is not sent again


def test_a_transient_failure_leaves_it_retrying_and_raises_for_dramatiq(email_via_smtp: SmtpServer, make: Make) -> None:
    email_via_smtp.handler.scripted_replies.append("451 4.3.0 later")
    notification = make()
    with pytest.raises(ProviderTransientError):
        send(notification)
    notification.refresh_from_db()
    assert (notification.status, notification.attempts, notification.last_error_code) == (
        "retrying",
        1,
        "smtp_message_deferred",
    )


def test_smtp_server_down_is_provider_down(settings, make: Make) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # discard port: connection refused
    with pytest.raises(ProviderTransientError) as raised:
        send(make())
    assert (raised.value.code, raised.value.failure_class) == ("smtp_connection_failed", "provider_down")


def test_no_recipient_is_dead_at_once(email_via_smtp: SmtpServer, make: Make) -> None:
    notification = make(channel="sms", phone="")
    assert send(notification) == "dead"
    notification.refresh_from_db()
    assert (notification.status, notification.last_error_code, notification.attempts) == (
        "dead",
        "invalid_recipient",
        1,
    )


def test_sms_not_configured_is_dead_with_its_code(make: Make) -> None:
    notification = make(channel="sms")
    assert send(notification) == "dead"
    notification.refresh_from_db()
    assert notification.last_error_code == "sms_not_configured"


def test_a_message_for_a_row_another_worker_is_sending_is_retried_later(make: Make) -> None:
    notification = make()
    Notification.objects.filter(id=notification.id).update(status="sending", claimed_at=timezone.now())
    with pytest.raises(NotificationBusy):
        send(notification)


def test_the_crash_window_a_stale_claim_is_re_claimed_and_shows_two_attempts(
    settings, email_via_smtp: SmtpServer, make: Make
) -> None:
    # Given a worker claimed the row (attempt 1) and died before recording anything
    notification = make()
    stale = timezone.now() - dt.timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS + 1)
    Notification.objects.filter(id=notification.id).update(status="sending", claimed_at=stale, attempts=1)
    # When the redelivered message runs after the claim timeout
    assert send(notification) == "sent"
    # Then it is sent, and the history shows the lost first attempt
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("sent", 2)
    assert [a.number for a in notification.attempt_log.all()] == [2]


def test_an_unexpected_error_after_the_claim_hands_the_row_back(monkeypatch, make: Make) -> None:
    def broken(**kwargs: object) -> None:
        raise RuntimeError("template bug")

    monkeypatch.setattr("apps.notifications.rendering.render", broken)
    notification = make()
    with pytest.raises(RuntimeError):
        send(notification)
    notification.refresh_from_db()
    assert (notification.status, notification.last_error_code) == ("retrying", "actor_failed")


# --- retries exhausted: the dead-letter actor ---------------------------------------------------------


def test_dead_letter_schedules_a_round_while_younger_than_the_horizon(settings, make: Make) -> None:
    settings.NOTIFICATION_ROUND_DELAY_SECONDS = 1800
    notification = make()
    Notification.objects.filter(id=notification.id).update(
        status="retrying", attempts=9, last_error_code="smtp_transient"
    )
    dead_letter(notification)

    notification.refresh_from_db()
    (round_row,) = rounds(notification)
    assert notification.status == "retrying"
    assert abs((round_row.available_at - round_row.created_at).total_seconds() - 1800) < 1
    assert abs((notification.next_attempt_at - round_row.available_at).total_seconds()) < 1
    assert round_row.published_at is None  # a durable delay in PostgreSQL, nothing held by RabbitMQ

    dead_letter(notification)  # the same exhaustion reported twice: one round only
    assert len(rounds(notification)) == 1


def test_dead_letter_marks_it_dead_past_the_horizon(settings, make: Make) -> None:
    settings.NOTIFICATION_RETRY_HORIZON_SECONDS = 3600
    notification = make()
    Notification.objects.filter(id=notification.id).update(
        status="retrying",
        attempts=9,
        last_error_code="smtp_transient",
        last_error_message="SMTP 451: later",
        created_at=timezone.now() - dt.timedelta(hours=2),
    )
    dead_letter(notification)

    notification.refresh_from_db()
    assert (notification.status, notification.last_error_code) == ("dead", "smtp_transient")
    assert notification.last_error_message == "Retries exhausted: SMTP 451: later"
    assert rounds(notification) == []


def test_a_replay_restarts_the_horizon(settings, make: Make) -> None:
    settings.NOTIFICATION_RETRY_HORIZON_SECONDS = 3600
    notification = make()
    Notification.objects.filter(id=notification.id).update(
        status="retrying", created_at=timezone.now() - dt.timedelta(hours=2), replayed_at=timezone.now()
    )
    dead_letter(notification)
    notification.refresh_from_db()
    assert notification.status == "retrying" and len(rounds(notification)) == 1


def test_dead_letter_never_kills_a_row_another_worker_holds(settings, make: Make) -> None:
    settings.NOTIFICATION_RETRY_HORIZON_SECONDS = 0
    notification = make()
    Notification.objects.filter(id=notification.id).update(status="sending", claimed_at=timezone.now())
    dead_letter(notification)
    notification.refresh_from_db()
    assert notification.status == "sending" and len(rounds(notification)) == 1


def test_dead_letter_leaves_finished_notifications_alone(make: Make) -> None:
    notification = make()
    Notification.objects.filter(id=notification.id).update(status="sent")
    dead_letter(notification)
    notification.refresh_from_db()
    assert notification.status == "sent" and rounds(notification) == []


# --- retry policy ---------------------------------------------------------------------------------------


def test_retry_policy_reads_the_settings_at_call_time(settings) -> None:
    settings.NOTIFICATION_MAX_RETRIES = 2
    assert retry_transient(1, ProviderTransientError("x")) and not retry_transient(2, ProviderTransientError("x"))
    settings.NOTIFICATION_MIN_BACKOFF_MS, settings.NOTIFICATION_MAX_BACKOFF_MS = 1000, 10_000_000
    delays = [retry_backoff_ms(retries) for retries in range(12)]
    # Dramatiq 2's formula: the first delay is at least the minimum (min..2*min), doubling per retry.
    assert 1000 <= delays[0] <= 2000 and 4000 <= delays[2] <= 8000  # exponential, with jitter
    assert max(delays) <= 300_000  # never longer than 5 minutes unacked in RabbitMQ (dramatiq#827)


def test_rows_whose_retry_message_was_lost_get_a_round(settings, make: Make) -> None:
    long_ago = timezone.now() - dt.timedelta(minutes=20)
    lost = make()
    Notification.objects.filter(id=lost.id).update(status="retrying", updated_at=long_ago)
    crashed = make()
    Notification.objects.filter(id=crashed.id).update(
        status="sending",
        updated_at=long_ago,
        claimed_at=long_ago - dt.timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS),
    )
    busy = make()  # retried a minute ago: its retry message is still on its way
    Notification.objects.filter(id=busy.id).update(
        status="retrying", updated_at=timezone.now() - dt.timedelta(minutes=1)
    )
    waiting = make()  # a round is scheduled
    Notification.objects.filter(id=waiting.id).update(
        status="retrying", updated_at=long_ago, next_attempt_at=timezone.now() + dt.timedelta(minutes=10)
    )

    out = io.StringIO()
    call_command("send_reminders", stdout=out)

    assert "notifications_rescue_stalled: ran {'rescued': 2}" in out.getvalue()
    assert [len(rounds(n)) for n in (lost, crashed, busy, waiting)] == [1, 1, 0, 0]
    assert notifications_rescue_stalled() == 0  # the rescued ones now have a round scheduled
