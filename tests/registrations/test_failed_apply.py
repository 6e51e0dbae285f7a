"""The dead letter of webhook events: failed applies are recorded, re-applied with an audit record,
and the sweeper re-enqueues accepted events whose message was lost (docs/failures.md)."""

from __future__ import annotations

import datetime as dt
import getpass
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from apps.notifications.models import Notification
from apps.outbox.models import OutboxMessage
from apps.registrations.failures import (
    ReapplyRefused,
    failed_apply_record,
    webhook_event_reapply,
    webhook_events_rescue_unapplied,
)
from apps.registrations.models import ApplyReapply, FailedApply, Registration, RegistrationEvent
from apps.registrations.tasks import webhook_event_apply, webhook_event_dead_letter
from apps.webhooks.models import Portal, WebhookEvent
from tests.outbox.factories import OutboxMessageFactory
from tests.registrations.factories import RegistrationFactory
from tests.support.webhooks import payload
from tests.webhooks.factories import WebhookEventFactory

pytestmark = pytest.mark.django_db


def accepted_event(
    portal: Portal,
    *,
    received_at: dt.datetime | None = None,
    body: dict[str, Any] | None = None,
    published_at: dt.datetime | None = None,
    outbox: bool = True,
) -> WebhookEvent:
    """An accepted event and its apply message, as the intake stores them (published when given)."""
    body = body or payload(f"R-{uuid.uuid4().hex[:8]}", phone=None)
    event = WebhookEventFactory(
        portal=portal, type=body["type"], payload=body, received_at=received_at or timezone.now()
    )
    if outbox:
        OutboxMessageFactory(kwargs={"event_id": str(event.id)}, published_at=published_at)
    return event


def apply_messages(event: WebhookEvent) -> int:
    return OutboxMessage.objects.filter(actor_name="webhook_event_apply", kwargs__event_id=str(event.id)).count()


# --- recording ----------------------------------------------------------------------------------------


def test_an_event_that_does_not_exist_is_recorded_at_once_and_a_repeat_updates_the_row() -> None:
    missing = str(uuid.uuid4())
    webhook_event_apply.fn(event_id=missing)
    webhook_event_apply.fn(event_id=missing)
    failed = FailedApply.objects.get(event_id=missing)
    assert (failed.error_code, failed.webhook_event_id, failed.attempts, failed.failures) == (
        "event_not_found",
        None,
        2,
        2,
    )
    assert failed.resolved_at is None


def test_a_bug_that_will_never_pass_is_recorded_at_once_and_nothing_is_half_applied(portal: Portal) -> None:
    # Given an accepted event whose payload our code cannot handle (no registration_id)
    body = payload("R-BUG", phone=None)
    del body["data"]["registration_id"]
    event = accepted_event(portal, body=body)
    # When the worker applies it, Then it is recorded (no retry can fix a KeyError) and nothing else changed
    webhook_event_apply.fn(event_id=str(event.id))
    failed = FailedApply.objects.get(event_id=event.id)
    assert failed.error_code == "apply_error" and "KeyError" in failed.error_message
    assert failed.webhook_event_id == event.id
    assert not Registration.objects.exists() and not RegistrationEvent.objects.exists()


def test_the_dead_letter_actor_records_exhausted_retries_with_the_last_error(portal: Portal) -> None:
    event = accepted_event(portal)
    message = {
        "args": [],
        "kwargs": {"event_id": str(event.id)},
        "options": {
            "retries": 4,
            "traceback": "Traceback (most recent call last):\n  ...\n"
            "django.db.utils.OperationalError: server closed the connection",
        },
    }
    webhook_event_dead_letter.fn(message, {"retries": 3, "max_retries": 3})
    failed = FailedApply.objects.get(event_id=event.id)
    assert (failed.error_code, failed.attempts) == ("apply_retries_exhausted", 4)
    assert failed.error_message.startswith("django.db.utils.OperationalError: server closed the connection")


def test_a_successful_apply_resolves_the_failed_apply(portal: Portal) -> None:
    event = accepted_event(portal)
    failed_apply_record(event_id=str(event.id), error_code="apply_retries_exhausted", error_message="down", attempts=21)
    webhook_event_apply.fn(event_id=str(event.id))
    assert FailedApply.objects.get(event_id=event.id).resolved_at is not None
    assert RegistrationEvent.objects.filter(webhook_event=event).count() == 1


# --- re-apply -------------------------------------------------------------------------------------------


def test_reapply_goes_through_the_outbox_with_an_audit_record_and_is_safe_twice(portal: Portal) -> None:
    event = accepted_event(portal, published_at=timezone.now())
    failed_apply_record(event_id=str(event.id), error_code="apply_retries_exhausted", error_message="down", attempts=21)
    first = webhook_event_reapply(event_id=str(event.id), reason="PostgreSQL is back", via="command", os_user="ops")
    second = webhook_event_reapply(event_id=str(event.id), reason="again, to be sure", via="command", os_user="ops")
    assert apply_messages(event) == 3  # the intake's, and one per re-apply
    assert first.outbox_message_id != second.outbox_message_id
    row = OutboxMessage.objects.get(id=first.outbox_message_id, published_at__isnull=True)
    assert row.options == {"correlation_id": str(event.id), "reapply": True}  # marks it for the resolve
    # When both messages are consumed, Then the event is applied once and notified once
    webhook_event_apply.fn(event_id=str(event.id))
    webhook_event_apply.fn(event_id=str(event.id))
    assert RegistrationEvent.objects.filter(webhook_event=event).count() == 1
    assert Notification.objects.filter(kind="confirmation").count() == 1
    failed = FailedApply.objects.get(event_id=event.id)
    assert failed.resolved_at is not None and failed.last_reapplied_at is not None
    assert [a.reason for a in failed.reapplies.order_by("created_at")] == ["PostgreSQL is back", "again, to be sure"]
    assert first.actor == "command (OS user ops)"


def test_reapply_refuses_what_cannot_be_applied(portal: Portal) -> None:
    rejected = WebhookEventFactory(
        portal=portal,
        delivery_id="msg_rejected",
        type="registration.created",
        status="rejected",
        raw_body=b"{}",
        payload={},
        received_at=timezone.now(),
    )
    with pytest.raises(ReapplyRefused):
        webhook_event_reapply(event_id=str(rejected.id), reason="x", via="command")
    with pytest.raises(ReapplyRefused):
        webhook_event_reapply(event_id=str(uuid.uuid4()), reason="x", via="command")
    with pytest.raises(ValueError):
        webhook_event_reapply(event_id=str(accepted_event(portal).id), reason="  ", via="command")
    assert not ApplyReapply.objects.exists()


def test_reapply_events_command_all_records_the_command_and_os_user(portal: Portal, capsys) -> None:
    events = [accepted_event(portal) for _ in range(2)]
    for event in events:
        failed_apply_record(event_id=str(event.id), error_code="apply_error", error_message="bug", attempts=1)
    resolved = accepted_event(portal)
    failed_apply_record(event_id=str(resolved.id), error_code="apply_error", error_message="bug", attempts=1)
    FailedApply.objects.filter(event_id=resolved.id).update(resolved_at=timezone.now())

    call_command("reapply_events", "--all", "--reason", "bug fixed in 1.4.2")
    assert "re-apply queued for 2 event(s), 0 refused" in capsys.readouterr().out
    audits = ApplyReapply.objects.all()
    assert {a.event_id for a in audits} == {e.id for e in events}
    assert {(a.via, a.os_user, a.reason, a.user_id) for a in audits} == {
        ("command", getpass.getuser(), "bug fixed in 1.4.2", None)
    }
    with pytest.raises(CommandError):
        call_command("reapply_events", str(uuid.uuid4()), "--reason", "typo")
    with pytest.raises(CommandError):
        call_command("reapply_events", "--all", "--reason", " ")


# --- admin: permission, confirmation, audit ---------------------------------------------------------


def staff_client(*codenames: str) -> Client:
    user = User.objects.create_user(f"staff-{uuid.uuid4().hex[:6]}", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def failed(portal: Portal) -> FailedApply:
    event = accepted_event(portal, published_at=timezone.now())
    return failed_apply_record(
        event_id=str(event.id),
        error_code="apply_retries_exhausted",
        error_message="OperationalError: the database system is shutting down",
        attempts=21,
    )


def test_staff_with_view_permission_alone_sees_failed_applies_but_cannot_reapply(failed: FailedApply) -> None:
    client = staff_client("view_failedapply", "view_webhookevent")
    listing = client.get("/admin/registrations/failedapply/?resolved=no")
    assert listing.status_code == 200 and str(failed.event_id) in listing.text
    assert 'value="reapply"' not in listing.text
    by_delivery = client.get("/admin/registrations/failedapply/", {"q": failed.webhook_event.delivery_id})
    assert str(failed.event_id) in by_delivery.text
    assert client.get("/admin/registrations/failedapply/", {"q": "not-a-uuid"}).status_code == 200
    detail = client.get(f"/admin/registrations/failedapply/{failed.pk}/change/")
    assert detail.status_code == 200
    assert f"/admin/webhooks/webhookevent/{failed.event_id}/change/" in detail.text
    client.post(
        "/admin/registrations/failedapply/",
        {"action": "reapply", "_selected_action": [failed.pk], "confirm": "yes", "reason": "sneaky"},
    )
    assert not ApplyReapply.objects.exists()
    assert apply_messages(failed.webhook_event) == 1


def test_reapply_action_asks_for_a_reason_then_queues_and_shows_the_audit(failed: FailedApply) -> None:
    client = staff_client("view_failedapply", "reapply_failedapply")
    confirmation = client.post(
        "/admin/registrations/failedapply/", {"action": "reapply", "_selected_action": [failed.pk]}
    )
    assert confirmation.status_code == 200 and 'name="reason"' in confirmation.text
    assert not ApplyReapply.objects.exists(), "nothing happens before the confirmation"
    empty = client.post(
        "/admin/registrations/failedapply/",
        {"action": "reapply", "_selected_action": [failed.pk], "confirm": "yes", "reason": " "},
    )
    assert "Give a reason." in empty.text and not ApplyReapply.objects.exists()

    done = client.post(
        "/admin/registrations/failedapply/",
        {"action": "reapply", "_selected_action": [failed.pk], "confirm": "yes", "reason": "database restored"},
    )
    assert done.status_code == 302
    audit = ApplyReapply.objects.get()
    assert (audit.via, audit.reason, audit.failed_apply_id) == ("admin", "database restored", failed.pk)
    assert apply_messages(failed.webhook_event) == 2
    detail = client.get(f"/admin/registrations/failedapply/{failed.pk}/change/")
    assert "database restored" in detail.text and audit.user.username in detail.text
    assert client.get("/admin/registrations/applyreapply/").status_code == 403  # its own list: view_applyreapply


def test_rebuild_needs_its_own_permission(portal: Portal) -> None:
    registration = RegistrationFactory(portal=portal, external_id="R-RB", version=5)  # no events: stale
    viewer = staff_client("view_registration")
    viewer.post("/admin/registrations/registration/", {"action": "rebuild", "_selected_action": [registration.pk]})
    registration.refresh_from_db()
    assert registration.version == 5, "a view-only user could rebuild"
    rebuilder = staff_client("view_registration", "rebuild_registration")
    response = rebuilder.post(
        "/admin/registrations/registration/", {"action": "rebuild", "_selected_action": [registration.pk]}
    )
    assert response.status_code == 302
    registration.refresh_from_db()
    assert registration.version == 0  # folded from its (empty) event log


# --- the sweeper -------------------------------------------------------------------------------------


def test_the_sweeper_rescues_an_event_whose_message_was_lost_once_per_interval(portal: Portal, settings) -> None:
    settings.APPLY_SWEEP_AFTER_SECONDS = 600
    now = timezone.now()
    long_ago = now - dt.timedelta(minutes=30)
    lost = accepted_event(portal, received_at=long_ago, published_at=long_ago)
    no_outbox_row = accepted_event(portal, received_at=long_ago, outbox=False)
    recent = accepted_event(portal, received_at=now - dt.timedelta(minutes=2), published_at=now)
    still_unpublished = accepted_event(portal, received_at=long_ago, published_at=None)
    republished_lately = accepted_event(portal, received_at=long_ago, published_at=now - dt.timedelta(minutes=3))
    failed = accepted_event(portal, received_at=long_ago, published_at=long_ago)
    failed_apply_record(event_id=str(failed.id), error_code="apply_error", error_message="bug", attempts=1)
    applied = accepted_event(portal, received_at=long_ago, published_at=long_ago)
    webhook_event_apply.fn(event_id=str(applied.id))

    assert webhook_events_rescue_unapplied(now=now) == 2
    assert apply_messages(lost) == 2 and apply_messages(no_outbox_row) == 1
    for untouched in (recent, still_unpublished, republished_lately, failed, applied):
        assert apply_messages(untouched) == 1
    # Run again at once: the new rows are not published yet, so nothing more is queued
    assert webhook_events_rescue_unapplied(now=now) == 0
    # When the rescue message is published and lost too, the next rescue comes an interval later
    OutboxMessage.objects.filter(published_at__isnull=True, kwargs__event_id=str(lost.id)).update(published_at=now)
    assert webhook_events_rescue_unapplied(now=now + dt.timedelta(minutes=5)) == 0
    assert webhook_events_rescue_unapplied(now=now + dt.timedelta(minutes=11)) >= 1
    assert apply_messages(lost) == 3
