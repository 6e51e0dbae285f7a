"""How real failures end, end to end (outbox -> RabbitMQ -> Dramatiq worker -> aiosmtpd): greylisting,
a wrong password fixed later, an outage spanning many cool-downs, an error after the provider
accepted, and the sweep rescuing a lost message. Measured figures are printed (`-s` shows them);
assertions are about what happened (counts, statuses, no duplicates), with generous timeouts."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator

import pytest
from django.db import connection
from django.utils import timezone

from apps.notifications import actor_names
from apps.notifications.channels import reset_providers
from apps.notifications.models import CircuitBreaker, Notification
from apps.notifications.services import notifications_rescue_stalled
from apps.outbox.models import OutboxMessage
from eventplatform import metrics
from tests.notifications.conftest import InProcessPipeline
from tests.support.notifications import send_rows_per_notification
from tests.support.polling import wait_until
from tests.support.sms import SmsApi
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.django_db(transaction=True)

Make = Callable[..., Notification]


def delivered_ids(server: SmtpServer) -> list[str]:
    return [m["X-Eventplatform-Notification-Id"] for m in server.messages]


@pytest.fixture
def auth_smtp(settings) -> Iterator[SmtpServer]:
    """An SMTP server that asks for AUTH; notifications log in to it."""
    server = SmtpServer(auth=True).start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", server.port, 5
    settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = "events", "secret"
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    reset_providers()
    yield server
    server.stop()


@pytest.mark.slow
def test_twenty_greylisted_messages_are_retried_each_on_its_own_and_never_open_the_breaker(
    settings, email_via_smtp: SmtpServer, pipeline: InProcessPipeline, make_notification: Make
) -> None:
    # Given a server that greylists every recipient twice, 1-2 s and 2-4 s backoffs, and a breaker
    # that would open after 3 failures and then let one probe through per 10 s cool-down
    settings.NOTIFICATION_MIN_BACKOFF_MS, settings.NOTIFICATION_MAX_BACKOFF_MS = 1000, 4000
    settings.NOTIFICATION_BREAKER_THRESHOLD, settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS = 3, 10
    email_via_smtp.handler.greylist_tries = 2
    started = time.monotonic()
    notifications = [make_notification(registration=None, email=f"guest{i}@example.org") for i in range(20)]

    # When they are all sent at once
    ids = [n.id for n in notifications]
    wait_until(
        lambda: Notification.objects.filter(id__in=ids, status="sent").count() == 20,
        timeout=60,
        what="all twenty delivered",
    )
    elapsed = time.monotonic() - started

    # Then each was refused twice, delivered on its third try, once; the breaker never opened
    print(
        f"\n20 greylisted x2: 20 delivered in {elapsed:.1f} s (backoffs 1-2 s then 2-4 s; "
        f"a breaker-bound run would need ~20 cool-downs = 200 s)"
    )
    assert sorted(delivered_ids(email_via_smtp)) == sorted(str(i) for i in ids)
    assert email_via_smtp.handler.refused_by_stage["RCPT"] == 40
    assert set(Notification.objects.filter(id__in=ids).values_list("attempts", flat=True)) == {3}
    assert not Notification.objects.filter(id__in=ids, last_error_code="circuit_open").exists()
    breaker = CircuitBreaker.objects.filter(provider="email").first()
    assert breaker is None or (breaker.state, breaker.opened_at) == ("closed", None)
    assert elapsed < 30, "greylisting waited for breaker cool-downs"


@pytest.mark.slow
def test_a_wrong_password_makes_everything_wait_never_dead_and_all_go_out_soon_after_the_fix(
    settings, auth_smtp: SmtpServer, pipeline: InProcessPipeline, make_notification: Make
) -> None:
    # Given the server refuses our credentials (535) and misconfigured breakers are probed every 2 s
    settings.NOTIFICATION_BREAKER_MISCONFIGURED_PROBE_SECONDS = 2
    auth_smtp.handler.always["AUTH"] = "535 5.7.8 Authentication credentials invalid"
    notifications = [make_notification() for _ in range(10)]
    ids = [n.id for n in notifications]

    # When the first send finds out, the breaker says so at once and everything waits
    wait_until(
        lambda: CircuitBreaker.objects.filter(
            provider="email", state__in=["misconfigured", "half_open"], reason__startswith="smtp_auth_failed"
        ).exists(),
        what="the breaker to open as misconfigured",
    )
    wait_until(
        lambda: Notification.objects.filter(id__in=ids, deferred_at__isnull=False).count() == 10,
        timeout=30,
        what="every send waiting",
    )
    assert metrics.BREAKER_MISCONFIGURED.labels(provider="email")._value.get() == 1
    time.sleep(7)  # several probe intervals of a misconfigured provider
    waiting = Notification.objects.filter(id__in=ids)
    assert not waiting.filter(status="dead").exists() and auth_smtp.messages == []
    # smtplib tries each mechanism the server offers (PLAIN, LOGIN): two refusals per login
    logins_during_outage = auth_smtp.handler.refused_by_stage["AUTH"] // 2

    # When the operator fixes the account
    del auth_smtp.handler.always["AUTH"]
    fixed = time.monotonic()
    wait_until(lambda: waiting.filter(status="sent").count() == 10, timeout=60, what="all ten sent after the fix")
    after_fix = time.monotonic() - fixed

    # Then all went out, once each, nothing died, the breaker is closed, at most 2 outbox rows each
    rows = send_rows_per_notification(notifications)
    print(
        f"\n535 for ~9 s then fixed: 10 delivered {after_fix:.1f} s after the fix, 0 dead, "
        f"{logins_during_outage} refused logins during the outage, max {max(rows.values())} send rows per "
        f"notification, {OutboxMessage.objects.filter(actor_name=actor_names.PROBE_ACTOR).count()} probe rows"
    )
    assert sorted(delivered_ids(auth_smtp)) == sorted(str(i) for i in ids)
    assert after_fix < 60
    # the first sends (up to the two worker threads), then one probe per 2 s interval
    assert logins_during_outage <= 2 + 9 // 2 + 1, "the misconfigured provider was called more than once per probe"
    assert CircuitBreaker.objects.get(provider="email").state == "closed"
    assert metrics.BREAKER_MISCONFIGURED.labels(provider="email")._value.get() == 0
    assert max(rows.values()) <= 2


def test_a_misconfigured_primary_hands_the_same_send_to_the_fallback(
    settings, auth_smtp: SmtpServer, pipeline: InProcessPipeline, make_notification: Make
) -> None:
    fallback = SmtpServer().start()
    try:
        settings.EMAIL_FALLBACK_URL = fallback.url
        reset_providers()
        auth_smtp.handler.always["AUTH"] = "535 5.7.8 Authentication credentials invalid"
        notification = make_notification()

        wait_until(lambda: notification.attempt_log.filter(outcome="sent").exists(), what="the fallback to send it")

        notification.refresh_from_db()
        assert (notification.provider, notification.attempts) == ("email_fallback", 1)
        assert [(a.provider, a.error_code) for a in notification.attempt_log.order_by("id")] == [
            ("email", "smtp_auth_failed"),
            ("email_fallback", ""),
        ]
        assert len(fallback.messages) == 1 and auth_smtp.messages == []
        assert CircuitBreaker.objects.get(provider="email").state == "misconfigured"
    finally:
        fallback.stop()


@pytest.mark.slow
def test_an_outage_over_many_cooldowns_costs_at_most_two_outbox_rows_per_notification(
    settings, email_via_smtp: SmtpServer, pipeline: InProcessPipeline, make_notification: Make
) -> None:
    # Given the server is down (421) for ten cool-downs of 1 s
    settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS = 1.0
    email_via_smtp.handler.always["MAIL"] = "421 4.3.2 Service shutting down"
    notifications = [make_notification() for _ in range(20)]
    ids = [n.id for n in notifications]
    wait_until(
        lambda: Notification.objects.filter(id__in=ids, deferred_at__isnull=False).count() == 20,
        timeout=30,
        what="every send waiting for the breaker",
    )
    time.sleep(10)

    # When it comes back
    del email_via_smtp.handler.always["MAIL"]
    wait_until(
        lambda: Notification.objects.filter(id__in=ids, status="sent").count() == 20, timeout=60, what="all twenty sent"
    )

    # Then each went out once, and the outage wrote no row per notification per cool-down
    rows = send_rows_per_notification(notifications)
    probes = OutboxMessage.objects.filter(actor_name=actor_names.PROBE_ACTOR).count()
    print(
        f"\noutage of ~10 cool-downs: send rows per notification max {max(rows.values())}, "
        f"total {sum(rows.values())} for 20; {probes} probe rows for the channel; "
        f"{email_via_smtp.handler.refused} refusals"
    )
    assert sorted(delivered_ids(email_via_smtp)) == sorted(str(i) for i in ids)
    assert max(rows.values()) <= 2
    assert probes <= 15


def test_an_error_after_the_provider_accepted_never_sends_again(
    email_via_smtp: SmtpServer, pipeline: InProcessPipeline, make_notification: Make
) -> None:
    # Given recording the attempt fails after the provider accepted (a trigger refusing the INSERT)
    table = "notifications_notificationattempt"
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION refuse_attempt() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'bookkeeping is down'; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER refuse_attempt BEFORE INSERT ON {table} FOR EACH ROW "
            "WHEN (NEW.outcome = 'sent') EXECUTE FUNCTION refuse_attempt()"
        )
    try:
        notification = make_notification()
        # When it is sent
        wait_until(
            lambda: Notification.objects.filter(id=notification.id, status="sent").exists(),
            what="the notification to be recorded sent",
        )
        time.sleep(2)  # a hand-back as `retrying` would be retried within this (50-200 ms backoffs)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"DROP TRIGGER refuse_attempt ON {table}")
            cursor.execute("DROP FUNCTION refuse_attempt()")

    # Then one delivery, status sent, and no attempt row (the bookkeeping that failed)
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == ("sent", 1)
    assert delivered_ids(email_via_smtp) == [str(notification.id)]
    assert notification.attempt_log.count() == 0


def test_the_sweep_requeues_a_pending_notification_whose_message_was_lost(
    settings, email_via_smtp: SmtpServer, make_notification: Make
) -> None:
    # Given a notification whose outbox row was published 20 minutes ago and never consumed
    settings.NOTIFICATION_PENDING_RESCUE_AFTER_SECONDS = 900
    lost, waiting = make_notification(), make_notification()
    long_ago = timezone.now() - dt.timedelta(minutes=20)
    OutboxMessage.objects.filter(kwargs__notification_id=str(lost.id)).update(published_at=long_ago)
    Notification.objects.filter(id__in=[lost.id, waiting.id]).update(updated_at=long_ago)
    before = metrics.NOTIFICATIONS_RESCUED.labels(reason="pending_lost")._value.get()

    # When the sweep runs (twice: safe to repeat)
    first, second = notifications_rescue_stalled(), notifications_rescue_stalled()

    # Then the lost one, only, got a new outbox row; the one whose row still waits was left alone
    assert (first, second) == (1, 0)
    assert OutboxMessage.objects.filter(kwargs__notification_id=str(lost.id), published_at__isnull=True).count() == 1
    assert OutboxMessage.objects.filter(kwargs__notification_id=str(waiting.id)).count() == 1
    assert metrics.NOTIFICATIONS_RESCUED.labels(reason="pending_lost")._value.get() - before == 1

    # And the pipeline delivers it
    running = InProcessPipeline().start()
    try:
        wait_until(lambda: Notification.objects.filter(id=lost.id, status="sent").exists(), what="the rescued send")
    finally:
        running.stop()
    assert str(lost.id) in delivered_ids(email_via_smtp)


def test_the_sweep_wakes_sends_left_waiting_while_the_breaker_is_closed(make_notification: Make) -> None:
    notification = make_notification()
    Notification.objects.filter(id=notification.id).update(deferred_at=timezone.now() - dt.timedelta(minutes=5))
    CircuitBreaker.objects.create(provider="email", state="closed")

    assert notifications_rescue_stalled() == 1

    notification.refresh_from_db()
    assert notification.deferred_at is None
    assert OutboxMessage.objects.filter(kwargs__notification_id=str(notification.id)).count() == 2


@pytest.mark.slow
def test_a_rejected_sms_token_waits_and_is_sent_once_the_account_accepts_it(
    settings, sms_via_api: SmsApi, pipeline: InProcessPipeline, make_notification: Make
) -> None:
    # Given the SMS API rejects our token (401, Twilio 20003) and misconfigured breakers are probed every 1 s
    settings.NOTIFICATION_BREAKER_MISCONFIGURED_PROBE_SECONDS = 1
    settings.SMS_AUTH_TOKEN = "rotated-token"
    reset_providers()
    notifications = [make_notification(channel="sms") for _ in range(3)]
    ids = [n.id for n in notifications]
    wait_until(
        lambda: Notification.objects.filter(id__in=ids, deferred_at__isnull=False).count() == 3,
        what="every SMS waiting",
    )
    assert CircuitBreaker.objects.get(provider="sms").reason.startswith("sms_auth_failed")
    time.sleep(3)
    assert not Notification.objects.filter(id__in=ids, status="dead").exists() and sms_via_api.received == []

    # When the account accepts the new token
    sms_via_api.auth_token = "rotated-token"

    # Then every SMS goes out once and the breaker closes
    wait_until(
        lambda: Notification.objects.filter(id__in=ids, status="sent").count() == 3,
        timeout=30,
        what="the SMS after the fix",
    )
    assert len(sms_via_api.received) == 3
    assert CircuitBreaker.objects.get(provider="sms").state == "closed"
