"""Real faults under traffic, with real processes (gunicorn, run_relay, rundramatiq, aiosmtpd, this
run's PostgreSQL database and RabbitMQ vhost): nothing accepted is lost, and no e-mail is sent twice
outside the documented crash window (a send the provider accepted whose recording the crash
prevented: re-claimed after the claim timeout, it shows an attempt without its history row;
docs/notifications.md). Counted at the SMTP server, per X-Eventplatform-Notification-Id.

Already covered elsewhere, so not repeated here: RabbitMQ stopped under traffic
(tests/outbox/test_relay.py), duplicate and racing deliveries (tests/test_pipeline_end_to_end.py).
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import subprocess
import time
import uuid

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count, F

from apps.notifications.models import Notification
from apps.registrations.failures import webhook_events_rescue_unapplied
from apps.registrations.models import FailedApply
from apps.webhooks.models import WebhookEvent
from tests.support.notifications import emails_by_notification
from tests.support.processes import start_relay, wait_until
from tests.support.smtp import SmtpServer
from tests.support.stack import Stack, wait_for_emails

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def smtp(smtp_server: SmtpServer) -> SmtpServer:
    return smtp_server


def assert_nothing_lost_and_duplicates_only_in_the_crash_window(smtp: SmtpServer, registration_ids: list[str]) -> int:
    """Counted at the SMTP server, per X-Eventplatform-Notification-Id: every confirmation arrived, and
    a second copy only where a crash cut a send off between the provider's accept and the `sent`
    COMMIT. Such a send leaves its mark: a claimed attempt with no attempt row (`attempts` is higher
    than the history). So each notification may arrive at most 1 + (attempts - attempt rows) times;
    a copy beyond that was sent twice without a crash in between."""
    # A send cut off by the crash is `sending` until its claim times out and it is sent again (the
    # crash window): wait for every confirmation to settle, then for a late duplicate to arrive.
    confirmations = Notification.objects.filter(kind="confirmation")
    wait_until(
        lambda: not confirmations.filter(status__in=["pending", "sending", "retrying"]).exists(),
        timeout=60,
        interval=0.5,
        what="every confirmation settled",
    )
    time.sleep(3)  # a late duplicate would arrive within this window
    sent = emails_by_notification(smtp)
    recipients = {m["To"] for m in smtp.messages}
    assert recipients == {f"{r.lower()}@example.org" for r in registration_ids}, "an accepted registration was lost"
    assert WebhookEvent.objects.count() == len(registration_ids), "one event per delivery, re-sends included"
    assert confirmations.count() == len(registration_ids)
    assert set(confirmations.values_list("status", flat=True)) == {"sent"}
    assert not FailedApply.objects.filter(resolved_at__isnull=True).exists(), "an apply was left failed"
    lost_attempts = dict(
        Notification.objects.annotate(recorded=Count("attempt_log")).values_list("id", F("attempts") - F("recorded"))
    )
    beyond_crashes = {
        notification_id: copies
        for notification_id, copies in sent.items()
        if copies > 1 + lost_attempts[uuid.UUID(notification_id)]
    }
    assert not beyond_crashes, f"sent twice without a crash between send and record: {beyond_crashes}"
    return sum(copies - 1 for copies in sent.values())


def test_sigkill_of_the_worker_mid_stream_loses_nothing(portal, smtp: SmtpServer) -> None:
    stack = Stack(smtp)
    try:
        ids = [f"R-WK-{n}" for n in range(200)]
        statuses: collections.Counter[int] = collections.Counter()
        started = time.monotonic()
        sending = stack.send_in_background(ids, statuses)
        wait_for_emails(stack, smtp, 40)
        # When the worker group is SIGKILLed mid-stream (applies and sends in flight) and restarted
        stack.kill_worker()
        in_flight = Notification.objects.filter(status="sending").count()
        stack.worker = stack.start_worker()
        sending.result(timeout=180)
        wait_for_emails(stack, smtp, len(ids))
        elapsed = time.monotonic() - started
        # Then every registration got its e-mail, and a second copy only where the crash hit a send
        duplicates = assert_nothing_lost_and_duplicates_only_in_the_crash_window(smtp, ids)
        assert duplicates <= in_flight, "more copies than sends the kill cut off"
        print(
            f"worker SIGKILL: {len(ids)} webhooks, {len(emails_by_notification(smtp))} delivered in {elapsed:.1f} s, "
            f"{in_flight} sending at the kill, {duplicates} duplicate(s) (crash window), statuses {dict(statuses)}"
        )
    finally:
        stack.stop()


def test_sigkill_of_the_relay_mid_stream_loses_nothing_and_duplicates_nothing(portal, smtp: SmtpServer) -> None:
    stack = Stack(smtp)
    try:
        ids = [f"R-RL-{n}" for n in range(200)]
        statuses: collections.Counter[int] = collections.Counter()
        started = time.monotonic()
        sending = stack.send_in_background(ids, statuses)
        wait_for_emails(stack, smtp, 40)
        # When the relay is SIGKILLed mid-stream (maybe between the broker's confirm and its COMMIT)
        stack.kill_relay()
        time.sleep(1)  # webhooks keep being accepted: the outbox holds them
        stack.relay = start_relay(stack.env)
        sending.result(timeout=180)
        wait_for_emails(stack, smtp, len(ids))
        elapsed = time.monotonic() - started
        # Then each e-mail went out exactly once: a republished row is the same message id, deduplicated
        duplicates = assert_nothing_lost_and_duplicates_only_in_the_crash_window(smtp, ids)
        assert duplicates == 0
        print(f"relay SIGKILL: {len(ids)} webhooks delivered once each in {elapsed:.1f} s, statuses {dict(statuses)}")
    finally:
        stack.stop()


def pg_ctlcluster(action: str) -> subprocess.CompletedProcess[str]:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
        capture_output=True,
        text=True,
        timeout=120,
    )


def postgres_answers() -> bool:
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True).returncode == 0


def test_postgresql_restarted_under_traffic_loses_nothing_and_duplicates_nothing(portal, smtp: SmtpServer) -> None:
    # A claim lease longer than the restart: a send accepted while PostgreSQL is down records `sent`
    # when it is back (sending._mark_sent), so nothing is sent twice; rounds without the 30 min rest.
    stack = Stack(smtp, NOTIFICATION_CLAIM_TIMEOUT_SECONDS="40", NOTIFICATION_ROUND_DELAY_SECONDS="1")
    try:
        ids = [f"R-PG-{n}" for n in range(160)]
        statuses: collections.Counter[int] = collections.Counter()
        started = time.monotonic()
        sending = stack.send_in_background(ids, statuses, pause=1.0)  # about 8 a second, for 20 s
        wait_for_emails(stack, smtp, 20)
        # When PostgreSQL restarts while webhooks arrive and workers write
        connection.close()
        restart_began = time.monotonic() - started
        try:
            restart = pg_ctlcluster("restart")
            assert restart.returncode == 0, restart.stderr
        finally:
            if not postgres_answers():
                pg_ctlcluster("start")
            wait_until(postgres_answers, timeout=60, what="PostgreSQL to answer")
        restarted_at = time.monotonic() - started
        # Then what was answered 503 is delivered again by the "portal", and everything arrives
        sending.result(timeout=180)
        wait_for_emails(stack, smtp, len(ids))
        elapsed = time.monotonic() - started
        duplicates = assert_nothing_lost_and_duplicates_only_in_the_crash_window(smtp, ids)
        assert duplicates == 0, "no process died: every e-mail arrives exactly once"
        print(
            f"PostgreSQL restart from {restart_began:.1f} s to {restarted_at:.1f} s: {len(ids)} webhooks, "
            f"all delivered in {elapsed:.1f} s, "
            f"{duplicates} duplicate(s) (crash window), statuses {dict(statuses)} (0 = connection error)"
        )
        assert all(p.alive() for p in (stack.web, stack.relay, stack.worker)), stack.logs()
    finally:
        stack.stop()
        connection.close()


BLOCK_TRIGGER = """
CREATE FUNCTION test_block_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.data->>'email' = 'r-blocked@example.org' THEN
        RAISE EXCEPTION 'test fault: applies of this registration are blocked';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER test_block_apply BEFORE INSERT ON registrations_registrationevent
    FOR EACH ROW EXECUTE FUNCTION test_block_apply();
"""
UNBLOCK = "DROP TRIGGER test_block_apply ON registrations_registrationevent; DROP FUNCTION test_block_apply();"


def test_an_apply_failing_until_its_retries_run_out_is_recorded_then_reapplied(portal, smtp: SmtpServer) -> None:
    with connection.cursor() as cursor:
        cursor.execute(BLOCK_TRIGGER)
    stack = Stack(smtp, APPLY_MAX_RETRIES="2")
    try:
        # Given one registration whose apply fails on every try (a real error from PostgreSQL), among others
        ids = ["R-OK-1", "R-BLOCKED", "R-OK-2"]
        statuses: collections.Counter[int] = collections.Counter()
        for registration_id in ids:
            stack.deliver(registration_id, statuses)
        blocked = WebhookEvent.objects.get(delivery_id="msg_R-BLOCKED")
        # Then, its retries spent, it is recorded in PostgreSQL with its code, message and attempts
        failed = wait_until(
            lambda: FailedApply.objects.filter(event_id=blocked.id).first(),
            timeout=60,
            what="the failed apply to be recorded",
        )
        assert failed.error_code == "apply_retries_exhausted", failed.error_message
        assert failed.attempts == 3 and "applies of this registration are blocked" in failed.error_message
        wait_for_emails(stack, smtp, 2)
        # ... and the sweeper leaves it to staff instead of looping on it
        assert webhook_events_rescue_unapplied(now=blocked.received_at + dt.timedelta(hours=1)) == 0
        # When the cause is fixed and it is re-applied (twice: safe), Then its e-mail goes out once
        with connection.cursor() as cursor:
            cursor.execute(UNBLOCK)
        call_command("reapply_events", "--all", "--reason", "trigger removed")
        call_command("reapply_events", str(blocked.id), "--reason", "once more, to be sure")
        wait_for_emails(stack, smtp, 3)
        wait_until(
            lambda: FailedApply.objects.get(event_id=blocked.id).resolved_at,
            timeout=30,
            what="the failed apply to be resolved",
        )
        assert_nothing_lost_and_duplicates_only_in_the_crash_window(smtp, ids)
        assert sum(emails_by_notification(smtp).values()) == 3
    finally:
        stack.stop()
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER IF EXISTS test_block_apply ON registrations_registrationevent; "
                "DROP FUNCTION IF EXISTS test_block_apply();"
            )
