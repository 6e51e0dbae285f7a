"""One row RabbitMQ returns (its queue does not exist) must not hold back the rows around it."""

from __future__ import annotations

import datetime as dt
import uuid

import pika
import pytest
import structlog
from django.utils import timezone

from apps.outbox.models import OutboxMessage
from apps.outbox.publisher import ConfirmingPublisher
from apps.outbox.relay import outbox_publish_batch
from eventplatform import metrics
from tests.outbox.factories import OutboxMessageFactory
from tests.outbox.test_publisher import amqp_url, vhost  # noqa: F401 - the vhost fixture

pytestmark = [pytest.mark.django_db, pytest.mark.timeout(120)]


def test_a_returned_row_is_backed_off_and_the_rest_of_its_batches_are_published(vhost: str) -> None:  # noqa: F811
    # Given a queue, 20 rows for it and, older than all of them, one row for a queue that does not exist
    queue = f"q_{uuid.uuid4().hex[:8]}"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url(vhost)))
    connection.channel().queue_declare(queue, durable=True)
    now = timezone.now()
    bad = OutboxMessageFactory(
        queue_name="no_such_queue", actor_name="nothing", available_at=now - dt.timedelta(minutes=1)
    )
    good = [
        OutboxMessageFactory(queue_name=queue, actor_name="nothing", available_at=now - dt.timedelta(seconds=30 - i))
        for i in range(20)
    ]
    publisher = ConfirmingPublisher(amqp_url(vhost), confirm_timeout=5.0)
    rejected_before = metrics.OUTBOX_REJECTED._value.get()
    try:
        # When the relay publishes in batches of 5
        with structlog.testing.capture_logs() as logs:
            published = [outbox_publish_batch(publisher=publisher, batch_size=5) for _ in range(6)]
        # Then every good row is confirmed and arrived, the bad one is pushed back, counted and logged
        assert sum(published) == 20, published
        arrived = set()
        channel = connection.channel()
        while (got := channel.basic_get(queue, auto_ack=True))[0] is not None:
            arrived.add(got[1].message_id)
        assert arrived == {str(row.id) for row in good}
        assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 1
        bad.refresh_from_db()
        assert bad.published_at is None and bad.publish_attempts == 1
        assert bad.available_at > timezone.now() + dt.timedelta(seconds=3)
        assert metrics.OUTBOX_REJECTED._value.get() - rejected_before == 1
        lines = [line for line in logs if line.get("error_code") == "outbox_message_rejected"]
        assert [line["outbox_ids"] for line in lines] == [[str(bad.id)]]

        # And when it fails again, it waits longer
        OutboxMessage.objects.filter(id=bad.id).update(available_at=timezone.now() - dt.timedelta(seconds=1))
        assert outbox_publish_batch(publisher=publisher, batch_size=5) == 0
        bad.refresh_from_db()
        assert bad.publish_attempts == 2
        assert bad.available_at > timezone.now() + dt.timedelta(seconds=8)
    finally:
        publisher.close()
        connection.close()
