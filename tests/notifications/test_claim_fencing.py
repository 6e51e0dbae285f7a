"""Once the provider accepted, nothing on our side sends again (issue 17, items 2 and 8): every
update after the claim is fenced by the claim's attempt number, `sent` is retried on its own when
the bookkeeping around it is refused, and claims are judged by the database's clock. Real
PostgreSQL (triggers, row locks, lock_timeout); messages counted at the real SMTP server."""

from __future__ import annotations

import collections
import datetime as dt
import threading
from collections.abc import Callable, Iterator

import pytest
from django.db import connection, connections
from django.utils import timezone

from apps.notifications import sending
from apps.notifications.errors import NotificationBusy, SentNotRecorded
from apps.notifications.failures import notification_mark_dead
from apps.notifications.models import Notification, NotificationAttempt
from apps.notifications.services import notification_send
from apps.outbox.models import OutboxMessage
from tests.support.polling import wait_until
from tests.support.smtp import SmtpServer

Make = Callable[..., Notification]
Status = Notification.Status


def send_as_dramatiq_would(notifications: list[Notification], *, rounds: int = 3) -> None:
    """Each send, and again for every one that raised (Dramatiq's retries, here at once)."""
    for _ in range(rounds):
        for notification in notifications:
            try:
                notification_send(notification_id=str(notification.id))
            except Exception:  # noqa: BLE001 - whatever it raised, Dramatiq would retry it
                pass


@pytest.fixture
def refusing_trigger() -> Callable[[str, str], None]:
    """A statement-level trigger that refuses `operation` on `table` (rolled back with the test)."""

    def install(table: str, operation: str) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE OR REPLACE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused by a test trigger'; END $$"
            )
            cursor.execute(
                f"CREATE TRIGGER test_refuse_{operation.lower()} BEFORE {operation} ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION test_refuse()"
            )

    return install


@pytest.mark.django_db
@pytest.mark.parametrize("refused", [("outbox",), ("outbox", "attempt")], ids=["outbox-delete", "outbox-and-attempt"])
def test_sent_is_recorded_when_the_bookkeeping_with_it_is_refused(
    refused: tuple[str, ...],
    email_via_smtp: SmtpServer,
    make_notification: Make,
    refusing_trigger: Callable[[str, str], None],
) -> None:
    # Given a deploy whose trigger (or permission) refuses the outbox DELETE (and the attempt row)
    # that go with `sent`
    notifications = [make_notification() for _ in range(20)]
    refusing_trigger(OutboxMessage._meta.db_table, "DELETE")
    if "attempt" in refused:
        refusing_trigger(NotificationAttempt._meta.db_table, "INSERT")
    # When they are sent, with Dramatiq's retries
    send_as_dramatiq_would(notifications)
    # Then each e-mail arrived exactly once, and each is recorded `sent`
    assert collections.Counter(email_via_smtp.ids()) == {str(n.id): 1 for n in notifications}
    assert set(Notification.objects.filter(id__in=[n.id for n in notifications]).values_list("status", "attempts")) == {
        (Status.SENT, 1)
    }


@pytest.fixture
def short_lock_timeout() -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '300ms'")
    yield
    with connection.cursor() as cursor:
        cursor.execute("RESET lock_timeout")


@pytest.mark.django_db(transaction=True)
def test_sent_waits_out_a_lock_held_on_the_row_and_is_not_sent_twice(
    email_via_smtp: SmtpServer,
    make_notification: Make,
    short_lock_timeout: None,
) -> None:
    # Given another session (the relay, a staff action) holds the row's lock for 2 s just as the
    # provider accepts the message, and our statements give up on a lock after 300 ms
    notification = make_notification()
    email_via_smtp.handler.data_delay = 0.3
    locked, released = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        try:
            wait_until(lambda: email_via_smtp.messages, timeout=10)
            other = connections.create_connection("default")
            with other.cursor() as cursor:
                cursor.execute("BEGIN")
                cursor.execute(
                    f"SELECT 1 FROM {Notification._meta.db_table} WHERE id = %s FOR UPDATE", [notification.id]
                )
                locked.set()
                released.wait(2)
                cursor.execute("COMMIT")
            other.close()
        finally:
            locked.set()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        send_as_dramatiq_would([notification])
    finally:
        released.set()
        holder.join()
    assert email_via_smtp.ids() == [str(notification.id)]
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == (Status.SENT, 1)


@pytest.mark.django_db
def test_a_worker_whose_claim_was_taken_over_changes_nothing(
    email_via_smtp: SmtpServer, make_notification: Make
) -> None:
    # Given worker A claimed the row (attempt 1), and after the claim timeout worker B claimed it (attempt 2)
    notification = make_notification()
    claim_a = sending._claim(str(notification.id))
    assert claim_a is not None and claim_a.attempts == 1
    Notification.objects.filter(id=notification.id).update(attempts=2, claimed_at=timezone.now())
    # When A, back from its slow provider call, hands the claim back, records `sent`, or kills it
    assert not sending._finish(claim_a, Status.RETRYING, last_error_code="smtp_timeout")
    attempt = sending._attempt(claim_a, started=timezone.now(), duration=0.1, outcome="sent", provider="email")
    sending._mark_sent(claim_a, attempt, now=timezone.now(), claimed=0.0)
    assert not notification_mark_dead(
        notification_id=str(notification.id), error_code="smtp_permanent", error_message="550", claim=claim_a.attempts
    )
    # Then B's claim stands untouched
    notification.refresh_from_db()
    assert (notification.status, notification.attempts, notification.last_error_code) == (Status.SENDING, 2, "")


def _db_now() -> dt.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]


@pytest.mark.django_db
@pytest.mark.parametrize("skew", [dt.timedelta(hours=1), dt.timedelta(minutes=-10)], ids=["ahead", "behind"])
def test_claims_are_judged_by_the_databases_clock(
    settings,
    monkeypatch,
    skew: dt.timedelta,
    email_via_smtp: SmtpServer,
    make_notification: Make,
) -> None:
    # Given this worker's clock is off (an hour ahead, or ten minutes behind)
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + skew)
    fresh, stale = make_notification(), make_notification()
    # ... a claim the database made a moment ago, and one it made longer ago than the claim timeout
    assert sending._claim(str(fresh.id)) is not None
    fresh.refresh_from_db()
    assert abs(fresh.claimed_at - _db_now()) < dt.timedelta(seconds=30)  # stamped by the database
    long_ago = _db_now() - dt.timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS + 5)
    Notification.objects.filter(id=stale.id).update(status=Status.SENDING, claimed_at=long_ago, attempts=1)
    # Then the fresh claim is not taken over, and the stale one is
    with pytest.raises(NotificationBusy):
        notification_send(notification_id=str(fresh.id))
    assert notification_send(notification_id=str(stale.id)).outcome == "sent"
    assert email_via_smtp.ids() == [str(stale.id)]


@pytest.mark.django_db
def test_the_rescue_sweep_judges_a_live_claim_by_the_databases_clock(
    settings,
    monkeypatch,
    make_notification: Make,
) -> None:
    # Given a claim the database made a moment ago on a notification past its retry horizon (a
    # skewed clock that thinks the claim stale would kill it while its worker is sending), and a
    # scheduler whose clock is an hour ahead
    notification = make_notification()
    assert sending._claim(str(notification.id)) is not None
    long_ago = _db_now() - dt.timedelta(seconds=settings.NOTIFICATION_RETRY_HORIZON_SECONDS + 3600)
    Notification.objects.filter(id=notification.id).update(updated_at=long_ago, created_at=long_ago)
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + dt.timedelta(hours=1))
    # When the sweep and an exhaustion message look at it
    from apps.notifications.failures import notification_retries_exhausted
    from apps.notifications.rescue import notifications_rescue_stalled

    notifications_rescue_stalled()
    notification_retries_exhausted(notification_id=str(notification.id))
    # Then the live claim is left to its worker: not dead
    notification.refresh_from_db()
    assert notification.status == Status.SENDING


@pytest.mark.django_db
def test_sent_refused_for_the_whole_claim_keeps_the_claim_and_sends_nothing_again(
    settings,
    email_via_smtp: SmtpServer,
    make_notification: Make,
) -> None:
    # Given the database refuses `sent` (every write of it) for as long as the claim lasts (7 s here)
    settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS = 7
    notification = make_notification()
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION test_refuse_sent() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.status = 'sent' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF; "
            "RETURN NEW; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER test_refuse_sent BEFORE UPDATE ON {Notification._meta.db_table} "
            "FOR EACH ROW EXECUTE FUNCTION test_refuse_sent()"
        )
    # When it is sent: the provider accepts, and `sent` is retried until the claim is about to expire
    with pytest.raises(SentNotRecorded):
        notification_send(notification_id=str(notification.id))
    # Then the claim is not handed back: a redelivered message finds it busy and sends nothing
    notification.refresh_from_db()
    assert (notification.status, notification.attempts) == (Status.SENDING, 1)
    with pytest.raises(NotificationBusy):
        notification_send(notification_id=str(notification.id))
    assert email_via_smtp.ids() == [str(notification.id)]
