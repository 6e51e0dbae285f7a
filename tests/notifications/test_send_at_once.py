"""The apply actor sends what it created at once; the outbox row, due after a grace, is the safety net."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from apps.notifications.models import Notification
from apps.notifications.send_at_once import notifications_send_at_once
from apps.notifications.services import notification_send
from apps.outbox.models import OutboxMessage
from apps.outbox.publisher import OutgoingMessage
from apps.outbox.relay import NOTIFY_CHANNEL, outbox_publish_batch
from apps.registrations.services import registration_apply
from apps.registrations.tasks import webhook_event_apply
from apps.webhooks.models import Portal, WebhookEvent
from tests.support.smtp import SmtpServer
from tests.support.webhooks import payload
from tests.webhooks.factories import WebhookEventFactory


class RecordingPublisher:
    """Stands in for RabbitMQ where only *which* rows the relay publishes matters."""

    def __init__(self) -> None:
        self.published: list[OutgoingMessage] = []

    def publish_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        self.published.extend(messages)


def created_event(portal: Portal, registration_id: str = "R-1") -> WebhookEvent:
    return WebhookEventFactory(
        portal=portal,
        delivery_id=f"msg_{registration_id}",
        type="registration.created",
        status="accepted",
        raw_body=b"",
        payload=payload(registration_id, phone=None),
        received_at=timezone.now(),
    )


def send_rows() -> list[OutboxMessage]:
    return list(OutboxMessage.objects.filter(actor_name="notification_send"))


@pytest.mark.django_db
def test_the_apply_actor_sends_what_it_created_and_discards_the_outbox_row(
    portal: Portal, email_via_smtp: SmtpServer
) -> None:
    webhook_event_apply(str(created_event(portal).id))

    (notification,) = Notification.objects.all()
    assert (notification.status, notification.attempts, notification.kind) == ("sent", 1, "confirmation")
    (message,) = email_via_smtp.messages
    assert message["X-Eventplatform-Notification-Id"] == str(notification.id)
    assert send_rows() == []  # nothing left for the relay: no second message, no second send


@pytest.mark.django_db
def test_a_temporary_failure_hands_the_send_to_the_actor_after_the_first_backoff(
    portal: Portal, email_via_smtp: SmtpServer, settings
) -> None:
    settings.NOTIFICATION_MIN_BACKOFF_MS = 2000
    email_via_smtp.handler.scripted_replies.append("451 4.7.1 Greylisted, try again later")
    before = timezone.now()
    webhook_event_apply(str(created_event(portal).id))

    (notification,) = Notification.objects.all()
    assert (notification.status, notification.last_error_code) == ("retrying", "smtp_message_deferred")
    (row,) = send_rows()
    assert row.id == notification.id and row.published_at is None
    # Due after the first backoff (2 s with up to 100% jitter), not after the grace (10 s).
    assert before < row.available_at <= timezone.now() + dt.timedelta(seconds=4)
    assert notification_send(notification_id=str(notification.id)).outcome == "sent"  # what the actor then does
    assert len(email_via_smtp.messages) == 1


@pytest.mark.django_db
def test_a_worker_dying_after_the_commit_leaves_a_row_the_relay_publishes_after_the_grace(
    portal: Portal, email_via_smtp: SmtpServer, settings
) -> None:
    settings.NOTIFICATION_SEND_AT_ONCE_GRACE_SECONDS = 10
    # The apply committed with send_at_once, and the process died before sending anything.
    result = registration_apply(event_id=str(created_event(portal).id), message_id="m-1", send_at_once=True)
    (notification_id,) = result.notification_ids
    (row,) = send_rows()
    assert row.id == notification_id
    assert timezone.now() + dt.timedelta(seconds=8) < row.available_at <= timezone.now() + dt.timedelta(seconds=10)

    publisher = RecordingPublisher()
    assert outbox_publish_batch(publisher=publisher, batch_size=100) == 0  # not due yet: the worker may still send
    OutboxMessage.objects.filter(id=row.id).update(available_at=timezone.now() - dt.timedelta(seconds=1))
    assert outbox_publish_batch(publisher=publisher, batch_size=100) == 1
    assert [m.message_id for m in publisher.published] == [str(notification_id)]
    assert notification_send(notification_id=str(notification_id)).outcome == "sent"
    assert len(email_via_smtp.messages) == 1


@pytest.mark.django_db
def test_a_row_the_relay_published_first_is_kept_and_its_message_sends_nothing(
    portal: Portal, email_via_smtp: SmtpServer
) -> None:
    result = registration_apply(event_id=str(created_event(portal).id), message_id="m-1", send_at_once=True)
    (notification_id,) = result.notification_ids
    OutboxMessage.objects.filter(id=notification_id).update(published_at=timezone.now())  # a slow send

    assert notifications_send_at_once(notification_ids=[notification_id]) == {"sent": 1}
    assert OutboxMessage.objects.get(id=notification_id).published_at is not None
    assert notification_send(notification_id=str(notification_id)).outcome == "skipped"  # the late message
    assert len(email_via_smtp.messages) == 1


@pytest.mark.django_db
def test_switched_off_every_send_goes_through_the_outbox_at_once(
    portal: Portal, email_via_smtp: SmtpServer, settings
) -> None:
    settings.NOTIFICATION_SEND_AT_ONCE = False
    webhook_event_apply(str(created_event(portal).id))

    (notification,) = Notification.objects.all()
    assert notification.status == "pending" and email_via_smtp.messages == []
    (row,) = send_rows()
    assert row.id != notification.id and row.available_at <= timezone.now()


@pytest.mark.django_db(transaction=True)
def test_only_rows_due_now_wake_the_relays(portal: Portal) -> None:
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        registration_apply(event_id=str(created_event(portal).id), message_id="m-1", send_at_once=True)
        assert list(listener.notifies(timeout=0.5, stop_after=1)) == []  # the delayed send row: no wake-up

        registration_apply(event_id=str(created_event(portal, "R-2").id), message_id="m-2", send_at_once=False)
        assert len(list(listener.notifies(timeout=2, stop_after=1))) == 1
