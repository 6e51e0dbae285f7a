"""data_retention_run: what is past its time goes, everything else stays."""

from __future__ import annotations

import datetime as dt
import io
import uuid

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.outbox.models import OutboxMessage
from apps.privacy.retention import data_retention_run
from apps.registrations.models import ProcessedMessage, Registration, RegistrationEvent
from apps.webhooks.models import Portal, RateWindow, WebhookEvent
from tests.outbox.factories import OutboxMessageFactory
from tests.support.webhooks import payload

pytestmark = pytest.mark.django_db

NOW = timezone.now()
DAY = dt.timedelta(days=1)


def outbox(*, published_days_ago: float | None) -> OutboxMessage:
    return OutboxMessageFactory(
        queue_name="registrations",
        actor_name="x",
        kwargs={},
        published_at=None if published_days_ago is None else NOW - published_days_ago * DAY,
    )


def processed(days_ago: float) -> str:
    message_id = uuid.uuid4().hex
    ProcessedMessage.objects.create(message_id=message_id)
    ProcessedMessage.objects.filter(pk=message_id).update(processed_at=NOW - days_ago * DAY)
    return message_id


def test_rows_past_their_retention_are_deleted_and_younger_ones_kept(settings, portal: Portal) -> None:
    settings.RETENTION_OUTBOX_PUBLISHED_DAYS, settings.RETENTION_PROCESSED_MESSAGES_DAYS = 7, 30
    settings.RETENTION_RATE_WINDOWS_DAYS, settings.RETENTION_BATCH_SIZE = 1, 2  # several batches
    OutboxMessage.objects.all().delete()
    ProcessedMessage.objects.all().delete()
    old_published = [outbox(published_days_ago=8) for _ in range(5)]
    young_published = outbox(published_days_ago=6)
    old_unpublished = OutboxMessageFactory(
        queue_name="q", actor_name="x", kwargs={}, created_at=NOW - 30 * DAY, available_at=NOW - 30 * DAY
    )
    old_ids, young_id = [processed(31) for _ in range(3)], processed(29)
    old_window = RateWindow.objects.create(portal=portal, window_start=NOW - 2 * DAY, count=3)
    young_window = RateWindow.objects.create(portal=portal, window_start=NOW - dt.timedelta(hours=2), count=3)

    result = data_retention_run(now=NOW)

    assert result["outbox_published_deleted"] == 5
    assert not OutboxMessage.objects.filter(pk__in=[m.pk for m in old_published]).exists()
    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {young_published.pk, old_unpublished.pk}, (
        "an unpublished row is never deleted, however old"
    )
    assert result["processed_messages_deleted"] == 3
    assert set(ProcessedMessage.objects.values_list("pk", flat=True)) == {young_id}
    assert not ProcessedMessage.objects.filter(pk__in=old_ids).exists()
    assert result["rate_windows_deleted"] == 1
    assert list(RateWindow.objects.values_list("pk", flat=True)) == [young_window.pk]
    assert not RateWindow.objects.filter(pk=old_window.pk).exists()
    # A second run finds nothing more (safe to run twice).
    assert data_retention_run(now=NOW)["outbox_published_deleted"] == 0


def test_only_applied_events_past_the_retention_lose_body_and_payload(settings, make_event) -> None:
    settings.RETENTION_EVENT_BODIES_DAYS, settings.RETENTION_BATCH_SIZE = 90, 1
    old_applied = [
        make_event(payload(f"R-OLD-{n}", email=f"old{n}@example.org"), received_at=NOW - 91 * DAY) for n in range(2)
    ]
    young_applied = make_event(payload("R-YOUNG"), received_at=NOW - 89 * DAY)
    old_unapplied = make_event(payload("R-WAITING"), received_at=NOW - 91 * DAY, apply=False)
    old_rejected = make_event(
        payload("R-BAD", role="boss"),
        received_at=NOW - 91 * DAY,
        apply=False,
        status=WebhookEvent.Status.REJECTED,
        errors={"data": {"attendee": {"role": ["bad"]}}},
    )
    before = {e.pk: RegistrationEvent.objects.get(webhook_event=e).data for e in old_applied}

    assert data_retention_run(now=NOW)["event_bodies_redacted"] == 2

    for event in old_applied:
        event.refresh_from_db()
        assert bytes(event.raw_body) == b""
        assert event.payload["redacted"] == "retention"
        assert "attendee" not in event.payload["data"] and "old" not in str(event.payload)
        assert event.payload["data"]["registration_id"].startswith("R-OLD-")
        assert event.payload["type"] == "registration.created", "the skeleton says what the event was"
        # The registration keeps what it was built from: its own event log and projection.
        assert RegistrationEvent.objects.get(webhook_event=event).data == before[event.pk]
    assert Registration.objects.get(external_id="R-OLD-0").email == "old0@example.org"
    for event in (young_applied, old_unapplied, old_rejected):
        kept = WebhookEvent.objects.get(pk=event.pk)
        assert bytes(kept.raw_body) and "attendee" in kept.payload["data"]
    assert data_retention_run(now=NOW)["event_bodies_redacted"] == 0


def test_apply_retention_command_prints_its_counts() -> None:
    out = io.StringIO()
    call_command("apply_retention", stdout=out)
    assert "outbox_published_deleted: " in out.getvalue() and "event_bodies_redacted: " in out.getvalue()


def test_the_scheduler_purges_once_a_day_whatever_the_number_of_rounds(settings, portal: Portal) -> None:
    """The scheduler's retention job runs every round but purges only when its last purge is a day old."""
    from apps.notifications.scheduler import scheduler_run_job
    from apps.support.management.commands.send_reminders import JOBS

    settings.RETENTION_OUTBOX_PUBLISHED_DAYS = 7
    job = next(job for job in JOBS if job.name == "retention")
    outbox(published_days_ago=8)
    first = scheduler_run_job(job=job, now=NOW)
    assert first.outcome == "ran" and first.result["outbox_published_deleted"] == 1

    outbox(published_days_ago=8)  # old enough, but the day has not passed: left for tomorrow
    again = scheduler_run_job(job=job, now=NOW + dt.timedelta(hours=23))
    assert again.result == {**first.result, "idle": True}, "the last purge's counts, marked as nothing done now"
    assert OutboxMessage.objects.filter(published_at__isnull=False).count() == 1

    tomorrow = scheduler_run_job(job=job, now=NOW + DAY + dt.timedelta(minutes=1))
    assert tomorrow.result["outbox_published_deleted"] == 1
    assert not OutboxMessage.objects.filter(published_at__isnull=False).exists()
