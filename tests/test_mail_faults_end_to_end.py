"""How the mail server fails in real life, with real processes: gunicorn, run_relay and rundramatiq
on this run's PostgreSQL database and RabbitMQ vhost, webhooks POSTed signed over HTTP as a portal
does, and a real SMTP server (aiosmtpd, tests/support/smtp.py). The same stories with an in-process
pipeline are in tests/notifications/test_failure_handling.py; here they run through the processes
and settings an operator runs (settings reach the children through their environment).

Each test asserts nothing lost and nothing sent twice: every registration's confirmation reached
the SMTP server exactly once (counted per X-Eventplatform-Notification-Id), and none is `dead`.
No process crashes here, so the documented crash window does not apply: one copy each, strictly.
Measured figures are printed (`-s`) and recorded in docs/failures.md.
"""

from __future__ import annotations

import collections
import threading
import time

import pytest
from django.db import DatabaseError, connection
from django.db.models import QuerySet

from apps.notifications import actor_names
from apps.notifications.models import CircuitBreaker, Notification, NotificationAttempt
from apps.outbox.models import OutboxMessage
from apps.webhooks.models import WebhookEvent
from tests.support.notifications import emails_by_notification, send_rows_per_notification
from tests.support.processes import wait_until
from tests.support.smtp import SmtpServer
from tests.support.stack import Stack, wait_for_emails

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

AUTH_REFUSED = "535 5.7.8 Authentication credentials invalid"
# The children's NOTIFICATION_MAX_RETRIES (the default): a send waiting for its provider must not
# spend these.
MAX_RETRIES = 8


def assert_each_delivered_once(smtp: SmtpServer, registration_ids: list[str]) -> list[Notification]:
    """Every registration's confirmation reached the server exactly once, and is recorded `sent`."""
    time.sleep(3)  # a late duplicate (a retry or a woken copy) would arrive within this window
    sent = emails_by_notification(smtp)
    assert {m["To"] for m in smtp.messages} == {f"{r.lower()}@example.org" for r in registration_ids}, (
        "an accepted registration was lost"
    )
    assert WebhookEvent.objects.count() == len(registration_ids), "one event per delivery, re-sends included"
    confirmations = list(Notification.objects.filter(kind="confirmation"))
    assert len(confirmations) == len(registration_ids)
    assert sorted(sent) == sorted(str(n.id) for n in confirmations), "an e-mail nobody asked for"
    duplicated = {notification_id: n for notification_id, n in sent.items() if n > 1}
    assert not duplicated, f"sent more than once: {duplicated}"
    assert {n.status for n in confirmations} == {"sent"}
    assert not Notification.objects.filter(status="dead").exists()
    return confirmations


def deliver_one_a_second_until_all_wait(
    stack: Stack, registration_ids: list[str], statuses: collections.Counter[int]
) -> QuerySet[Notification]:
    """Deliver one registration a second, then wait until every one's confirmation waits in
    PostgreSQL for the breaker (deferred); on a timeout, fail with their states and the logs.
    Returns those confirmations."""
    for registration_id in registration_ids:
        stack.deliver(registration_id, statuses)
        time.sleep(1)
    waiting = Notification.objects.filter(
        kind="confirmation", recipient__in=[f"{r.lower()}@example.org" for r in registration_ids]
    )
    try:
        wait_until(
            lambda: waiting.filter(deferred_at__isnull=False).count() == len(registration_ids),
            timeout=30,
            interval=0.2,
            what="every send waiting for the breaker",
        )
    except TimeoutError:
        raise AssertionError(f"{list(waiting.values('status', 'last_error_code'))}\n{stack.logs()}") from None
    return waiting


class BreakerSampler:
    """Reads the e-mail breaker's row every 0.2 s in a thread: the states it went through."""

    def __init__(self) -> None:
        self.samples: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> BreakerSampler:
        self._thread.start()
        return self

    def stop(self) -> list[tuple[str, str]]:
        """Safe twice, and before start()."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        return list(self.samples)

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.2):
                try:
                    row = CircuitBreaker.objects.filter(provider="email").values_list("state", "reason").first()
                except DatabaseError:  # PostgreSQL restarted by someone else: skip this sample
                    connection.close()
                    continue
                self.samples.append(row or ("none", ""))
        finally:
            connection.close()  # this thread's own connection


def test_a_greylisting_burst_is_delivered_once_each_and_never_opens_the_breaker(
    portal, smtp_server: SmtpServer
) -> None:
    # Given a mail server answering 451 to the first two tries of each recipient, backoffs of 0.5-1 s
    # then 1-2 s, and a breaker that would open after 5 failures and stay open 30 s (the defaults)
    smtp_server.handler.greylist_tries = 2
    stack = Stack(smtp_server, NOTIFICATION_MIN_BACKOFF_MS="1000", NOTIFICATION_MAX_BACKOFF_MS="4000")
    try:
        # When 20 registrations arrive at once
        ids = [f"R-GL-{n}" for n in range(20)]
        statuses: collections.Counter[int] = collections.Counter()
        started = time.monotonic()
        stack.send_in_background(ids, statuses, concurrency=20).result(timeout=120)
        accepted = time.monotonic() - started
        wait_for_emails(stack, smtp_server, len(ids), timeout=120)
        elapsed = time.monotonic() - started

        # Then each went out once, on its third try, after its own two refusals
        confirmations = assert_each_delivered_once(smtp_server, ids)
        assert smtp_server.handler.refused_by_stage["RCPT"] == 2 * len(ids)
        assert {n.attempts for n in confirmations} == {3}
        refusals = NotificationAttempt.objects.filter(outcome="transient_error")
        assert refusals.count() == 2 * len(ids)
        assert set(refusals.values_list("error_code", flat=True)) == {"smtp_mailbox_unavailable"}
        # And the breaker never opened: no deferral (each queues a probe), no log line, a closed row
        breaker = CircuitBreaker.objects.filter(provider="email").first()
        assert breaker is None or (breaker.state, breaker.opened_at, breaker.consecutive_failures) == (
            "closed",
            None,
            0,
        )
        assert not OutboxMessage.objects.filter(actor_name=actor_names.PROBE_ACTOR).exists()
        assert "circuit_breaker.opened" not in stack.worker.output()
        rows = send_rows_per_notification(confirmations)
        assert set(rows.values()) == {1}, "greylisting went through the outbox again"
        print(
            f"\ngreylisting x2, {len(ids)} registrations at once: all {len(ids)} accepted in {accepted:.1f} s, "
            f"delivered once each {elapsed:.1f} s after the first POST; 40 refusals, 3 attempts each, "
            f"breaker never opened, statuses {dict(statuses)}"
        )
    finally:
        stack.stop()


def test_a_refused_smtp_login_waits_never_dead_and_all_go_out_once_after_the_fix(portal) -> None:
    # Given a mail server refusing our credentials (535), probed every 3 s while misconfigured
    smtp = SmtpServer(auth=True).start()
    smtp.handler.always["AUTH"] = AUTH_REFUSED
    stack, sampler = None, BreakerSampler()
    try:
        stack = Stack(
            smtp,
            EMAIL_URL=f"smtp://events:secret@127.0.0.1:{smtp.port}",
            NOTIFICATION_BREAKER_MISCONFIGURED_PROBE_SECONDS="3",
        )
        sampler.start()
        refusing_since = time.monotonic()
        # When 10 registrations arrive over 10 s while it refuses
        ids = [f"R-AU-{n}" for n in range(10)]
        statuses: collections.Counter[int] = collections.Counter()
        confirmations = deliver_one_a_second_until_all_wait(stack, ids, statuses)
        time.sleep(max(0.0, refusing_since + 25 - time.monotonic()))
        refused_for = time.monotonic() - refusing_since
        samples = sampler.stop()

        # Then nothing was sent or died, and waiting spent no retries: no Dramatiq retry, no retry
        # round, the provider called once per probe (after the first sends), not once per send or retry
        assert smtp.messages == []
        waiting = list(confirmations.values_list("status", "attempts", "last_error_code", "next_attempt_at"))
        assert not [w for w in waiting if w[0] in ("dead", "sent")], waiting
        assert {w[2] for w in waiting} <= {"smtp_auth_failed", "provider_misconfigured"}, waiting
        assert {w[3] for w in waiting} == {None}, "a retry round was scheduled"
        assert "notification.transient_failure" not in stack.worker.output()
        assert "notification.retry_round_scheduled" not in stack.worker.output()
        calls = sum(w[1] for w in waiting)
        probes_possible = int(refused_for / 3) + 1
        assert calls <= 4 + probes_possible, f"{calls} provider calls in {refused_for:.0f} s: more than one per probe"
        assert max(w[1] for w in waiting) < MAX_RETRIES
        # And the breaker said `misconfigured` (half-open while a probe ran), with its reason, throughout
        states = [state for state, _ in samples]
        opened = next(i for i, state in enumerate(states) if state not in ("none", "closed"))
        assert set(states[opened:]) <= {"misconfigured", "half_open"}, collections.Counter(states)
        assert "misconfigured" in states
        assert "circuit_breaker.misconfigured" in stack.worker.output()  # logged as an error
        # And the workers' exporter says so: what the ProviderMisconfigured alert reads
        wait_until(
            lambda: stack.worker_metric("eventplatform_circuit_breaker_misconfigured", provider="email") == 1,
            timeout=15,
            what="the misconfigured gauge at 1",
        )
        assert {reason.split(":")[0] for _, reason in samples[opened:]} == {"smtp_auth_failed"}

        # When the operator fixes the account
        del smtp.handler.always["AUTH"]
        fixed = time.monotonic()
        wait_for_emails(stack, smtp, len(ids), timeout=60)
        after_fix = time.monotonic() - fixed

        # Then all went out once each within a minute, the breaker closed, at most 2 outbox rows each
        delivered = assert_each_delivered_once(smtp, ids)
        assert after_fix < 60
        assert CircuitBreaker.objects.get(provider="email").state == "closed"
        wait_until(
            lambda: stack.worker_metric("eventplatform_circuit_breaker_misconfigured", provider="email") == 0,
            timeout=15,
            what="the misconfigured gauge back to 0",
        )
        rows = send_rows_per_notification(delivered)
        assert max(rows.values()) <= 2
        # every attempt that failed was a real login the server refused (smtplib tries PLAIN, then LOGIN)
        failed = NotificationAttempt.objects.filter(outcome="transient_error")
        assert set(failed.values_list("error_code", flat=True)) == {"smtp_auth_failed"}
        assert failed.count() == smtp.handler.refused_by_stage["AUTH"] // 2
        probes = OutboxMessage.objects.filter(actor_name=actor_names.PROBE_ACTOR).count()
        print(
            f"\n535 for {refused_for:.0f} s, {len(ids)} registrations meanwhile: 0 dead, {failed.count()} refused "
            f"logins ({probes} probe rows, every 3 s), max {max(w[1] for w in waiting)} attempts per "
            f"notification; after the fix all {len(ids)} delivered once in {after_fix:.1f} s; "
            f"send rows per notification max {max(rows.values())}, total {sum(rows.values())}"
        )
    finally:
        sampler.stop()
        if stack is not None:
            stack.stop()
        smtp.stop()


def test_smtp_down_for_45_seconds_defers_without_a_storm_and_delivers_each_once_after(
    portal, smtp_server: SmtpServer
) -> None:
    # Given the pipeline sending (two delivered, the workers' SMTP connections open), a breaker
    # opening after 5 failures with a 5 s cool-down
    stack = Stack(smtp_server, NOTIFICATION_BREAKER_COOLDOWN_SECONDS="5")
    try:
        statuses: collections.Counter[int] = collections.Counter()
        before = ["R-DN-0", "R-DN-1"]
        for registration_id in before:
            stack.deliver(registration_id, statuses)
        wait_for_emails(stack, smtp_server, len(before), timeout=60)

        # When the mail server goes away (connection refused) and 10 registrations arrive over 10 s
        smtp_server.stop()
        down_at = time.monotonic()
        during = [f"R-DN-{n}" for n in range(2, 12)]
        outage = deliver_one_a_second_until_all_wait(stack, during, statuses)
        time.sleep(max(0.0, down_at + 45 - time.monotonic()))
        down_for = time.monotonic() - down_at

        # Then nothing died while it was down
        assert not outage.filter(status__in=["dead", "sent"]).exists()
        assert CircuitBreaker.objects.get(provider="email").state in ("open", "half_open")
        assert "circuit_breaker.opened" in stack.worker.output()  # the line the greylisting test must not see
        attempts_during = sum(outage.values_list("attempts", flat=True))

        # When it comes back on the same port
        smtp_server.restart()
        back = time.monotonic()
        wait_for_emails(stack, smtp_server, len(before) + len(during), timeout=90)
        after_back = time.monotonic() - back

        # Then each went out once, and the outage cost at most 2 outbox send rows per notification
        confirmations = assert_each_delivered_once(smtp_server, before + during)
        rows = send_rows_per_notification(
            n for n in confirmations if n.recipient.startswith(tuple(r.lower() + "@" for r in during))
        )
        assert len(rows) == len(during) and max(rows.values()) <= 2, rows
        assert CircuitBreaker.objects.get(provider="email").state == "closed"
        failed = NotificationAttempt.objects.filter(outcome="transient_error")
        codes = collections.Counter(failed.values_list("error_code", flat=True))
        probes = OutboxMessage.objects.filter(actor_name=actor_names.PROBE_ACTOR).count()
        print(
            f"\nSMTP down {down_for:.0f} s (connection refused, 5 s cool-down), {len(during)} registrations "
            f"meanwhile: 0 dead, {attempts_during} attempts in all during the outage ({dict(codes)}), "
            f"{probes} probe rows; send rows per notification max {max(rows.values())}, total "
            f"{sum(rows.values())} for {len(during)}; all delivered once {after_back:.1f} s after it came back"
        )
    finally:
        stack.stop()
