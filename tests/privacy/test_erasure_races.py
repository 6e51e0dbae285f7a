"""Erasure against sends in flight (issue 17 item 6), with real PostgreSQL sessions racing it.

A worker's transitions are played on a second connection, as the worker's guarded statements are:
the claim (`pending|retrying -> sending`) and the sent record (`sending -> sent`). Each test holds
one of them open so the erasure runs into its row lock, then commits it, and looks at what the
erasure wrote."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection, connections
from django.utils import timezone

from apps.notifications.models import Notification, NotificationReplay
from apps.privacy.erasure import attendee_erase
from apps.registrations.models import ApplyReapply, Registration
from apps.webhooks.models import Portal
from tests.notifications.factories import NotificationFactory
from tests.support.webhooks import encode, payload, signed_headers

EMAIL, PHONE = "ada.race@example.org", "+4915112345678"


def _dsn() -> str:
    settings = connection.settings_dict
    return (
        f"host={settings['HOST'] or '127.0.0.1'} port={settings['PORT'] or 5432} dbname={settings['NAME']} "
        f"user={settings['USER']}"
    )


@pytest.fixture
def worker() -> Iterator[psycopg.Connection]:
    """A second session, standing for a worker process."""
    with psycopg.connect(_dsn()) as session:
        yield session


def _registration(portal: Portal, client, external_id: str = "R-RACE") -> Registration:
    from apps.registrations.services import registration_apply

    raw = encode(payload(external_id, email=EMAIL, phone=PHONE, first_name="Ada"))
    headers = {k: v for k, v in signed_headers(raw).items() if k != "content-type"}
    response = client.post("/webhooks/pretix/", data=raw, content_type="application/json", headers=headers)
    registration_apply(event_id=response.json()["event_id"], message_id=uuid.uuid4().hex)
    return Registration.objects.get(external_id=external_id)


def _erase_in_thread() -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            attendee_erase(email=EMAIL, requested_by="test")
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def _wait_until_blocked(session: psycopg.Connection, timeout: float = 10.0) -> None:
    """Until some other session of this database waits for a lock (the erasure, on the worker's row)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(_dsn(), autocommit=True) as observer:
        while time.monotonic() < deadline:
            waiting = observer.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
                "AND pid <> %s",
                [session.info.backend_pid],
            ).fetchone()[0]
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError("the erasure never waited for the worker's row lock")


@pytest.mark.django_db(transaction=True)
def test_a_row_that_became_sent_meanwhile_is_not_written_back_to_sending(
    portal: Portal, client, worker: psycopg.Connection
) -> None:
    # Given: a worker claimed the e-mail (committed) and is recording `sent` (not committed yet)
    registration = _registration(portal, client)
    notification = Notification.objects.get(registration=registration, channel="email")
    Notification.objects.filter(pk=notification.pk).update(status="sending", claimed_at=timezone.now())
    worker.execute(
        "UPDATE notifications_notification SET status = 'sent', sent_at = now() WHERE id = %s AND status = 'sending'",
        [notification.pk],
    )
    # When: the erasure runs into the worker's row lock, and the worker commits
    thread, errors = _erase_in_thread()
    _wait_until_blocked(worker)
    worker.commit()
    thread.join(30)
    assert not errors, errors
    # Then: the row says what happened (sent), erased of the address
    notification.refresh_from_db()
    assert notification.status == "sent", "the erasure must not write back the status it read"
    assert notification.recipient == ""


@pytest.mark.django_db(transaction=True)
def test_a_claim_committed_during_the_erasure_keeps_its_true_status(
    portal: Portal, client, worker: psycopg.Connection
) -> None:
    # Given: a worker is claiming the pending e-mail (its claim not committed yet)
    registration = _registration(portal, client)
    notification = Notification.objects.get(registration=registration, channel="email")
    claimed = worker.execute(
        "UPDATE notifications_notification SET status = 'sending', claimed_at = now() "
        "WHERE id = %s AND status IN ('pending', 'retrying') RETURNING recipient",
        [notification.pk],
    ).fetchone()
    assert claimed == (EMAIL,)
    # When: the erasure starts, then the claim commits, then the worker records its send
    thread, errors = _erase_in_thread()
    _wait_until_blocked(worker)
    worker.commit()
    thread.join(30)
    assert not errors, errors
    notification.refresh_from_db()
    assert notification.status == "sending", "the send was already out: not marked cancelled as if it had not gone"
    sent = worker.execute(
        "UPDATE notifications_notification SET status = 'sent' WHERE id = %s AND status = 'sending'", [notification.pk]
    ).rowcount
    worker.commit()
    # Then: the worker's guarded `sent` still finds its row, and the address is gone
    assert sent == 1
    notification.refresh_from_db()
    assert (notification.status, notification.recipient) == ("sent", "")


@pytest.mark.django_db(transaction=True)
def test_a_claim_after_the_erasure_locked_the_row_finds_it_cancelled(
    portal: Portal, client, worker: psycopg.Connection
) -> None:
    # Given: the erasure holds its locks (held back at its last statement by a lock on its record table)
    registration = _registration(portal, client)
    ids = list(Notification.objects.filter(registration=registration).values_list("pk", flat=True))
    with psycopg.connect(_dsn()) as gate:
        gate.execute("LOCK TABLE privacy_erasurerecord IN ACCESS EXCLUSIVE MODE")
        thread, errors = _erase_in_thread()
        _wait_until_blocked(gate)
        # When: workers try to claim each notification meanwhile
        claims: list[object] = []

        def claim() -> None:
            with psycopg.connect(_dsn(), autocommit=True) as session:
                for pk in ids:
                    claims.append(
                        session.execute(
                            "UPDATE notifications_notification SET status = 'sending' "
                            "WHERE id = %s AND status IN ('pending', 'retrying') RETURNING recipient",
                            [pk],
                        ).fetchone()
                    )

        claimer = threading.Thread(target=claim)
        claimer.start()
        time.sleep(0.3)
        gate.rollback()  # the erasure goes on and commits
        thread.join(30)
        claimer.join(30)
    assert not errors, errors
    # Then: no claim got the row (nothing is sent to the erased address); each is cancelled, with the reason
    assert claims == [None] * len(ids)
    for notification in Notification.objects.filter(pk__in=ids):
        assert (notification.status, notification.last_error_code) == ("cancelled", "erased")
        assert notification.recipient == ""
        assert "erased on request" in notification.last_error_message


@pytest.mark.django_db
def test_waiting_notifications_end_cancelled_with_a_reason_and_others_keep_their_status(portal: Portal, client) -> None:
    registration = _registration(portal, client)
    statuses = {"pending": "cancelled", "retrying": "cancelled", "sent": "sent", "dead": "dead", "sending": "sending"}
    rows = {}
    for number, status in enumerate(statuses):
        rows[status] = NotificationFactory(
            registration=registration,
            kind="update",
            channel="email",
            dedupe_key=f"k{number}",
            status=status,
            recipient=EMAIL,
            context={"email": EMAIL},
            last_error_message=f"earlier: <{EMAIL}>",
            deferred_at=timezone.now() if status == "pending" else None,
        )  # pending and deferred (breaker open)
    attendee_erase(email=EMAIL)
    for status, expected in statuses.items():
        row = Notification.objects.get(pk=rows[status].pk)
        assert row.status == expected, status
        assert row.recipient == "" and EMAIL not in str(row.context) and EMAIL not in row.last_error_message
        if expected == "cancelled":
            assert row.last_error_code == "erased" and row.deferred_at is None


@pytest.mark.django_db
def test_free_text_in_replay_and_reapply_audits_is_scrubbed(portal: Portal, client) -> None:
    registration = _registration(portal, client)
    notification = Notification.objects.filter(registration=registration).first()
    reason = f"Ada Lovelace ({EMAIL}, {PHONE}) asked on the phone; Lovelace said so"
    replay = NotificationReplay.objects.create(
        notification=notification,
        replayed_at=timezone.now(),
        actor_type="command",
        actor="replay_notifications",
        reason=reason,
        previous_status="dead",
    )
    event_id = registration.events.get().webhook_event_id
    reapply = ApplyReapply.objects.create(
        event_id=event_id,
        via="command",
        os_user="ops",
        reason=reason,
        outbox_message_id=uuid.uuid4(),
        created_at=timezone.now(),
    )
    elsewhere = ApplyReapply.objects.create(
        event_id=uuid.uuid4(),
        via="command",
        os_user="ops",
        reason=f"mail from {EMAIL.upper()}",
        outbox_message_id=uuid.uuid4(),
        created_at=timezone.now(),
    )
    unrelated = ApplyReapply.objects.create(
        event_id=uuid.uuid4(),
        via="command",
        os_user="ops",
        reason="Ada from grace@example.org",
        outbox_message_id=uuid.uuid4(),
        created_at=timezone.now(),
    )

    call_command("erase_attendee", EMAIL, stdout=io.StringIO())

    for audit in (NotificationReplay.objects.get(pk=replay.pk), ApplyReapply.objects.get(pk=reapply.pk)):
        for needle in (EMAIL, PHONE, "Ada", "Lovelace"):
            assert needle not in audit.reason, (needle, audit.reason)
        assert "asked on the phone" in audit.reason, "the rest of the reason stays readable"
    assert EMAIL.upper() not in ApplyReapply.objects.get(pk=elsewhere.pk).reason
    assert ApplyReapply.objects.get(pk=unrelated.pk).reason == "Ada from grace@example.org", "someone else's audit"


@pytest.mark.django_db
def test_erase_finds_a_registration_submitted_with_padding(portal: Portal, client) -> None:
    # Given: the portal sent " ada@example.org" (and a phone with a newline)
    raw = encode(payload("R-PADDED", email=" ada@example.org", phone="+4915112345678\n"))
    headers = {k: v for k, v in signed_headers(raw).items() if k != "content-type"}
    response = client.post("/webhooks/pretix/", data=raw, content_type="application/json", headers=headers)
    from apps.registrations.services import registration_apply

    registration_apply(event_id=response.json()["event_id"], message_id=uuid.uuid4().hex)
    assert Notification.objects.filter(registration__external_id="R-PADDED", status="pending").exists()
    # When
    call_command("erase_attendee", "ada@example.org", stdout=io.StringIO())
    # Then: found, and its pending notification is not sent
    registration = Registration.objects.get(external_id="R-PADDED")
    assert (registration.email, registration.phone, registration.status) == ("", "", "cancelled")
    assert set(Notification.objects.filter(registration=registration).values_list("status", flat=True)) == {"cancelled"}
