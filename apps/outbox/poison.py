"""Poison messages: a message that kills its worker process is redelivered forever on classic queues.

A worker that dies (os._exit, a segfault, the OOM killer) never acks or nacks the message it was
processing; RabbitMQ delivers it again, flagged `redelivered`, to the next worker, which dies too.
Quorum queues stop this with x-delivery-limit (eventplatform/broker.py); classic queues have no
such limit, so this middleware keeps one: it counts redeliveries of each message in PostgreSQL
(a counter in the dying process's memory would die with it) and, past BROKER_MAX_DELIVERIES
deliveries, fails the message without running it, which nacks it to the queue's `.XQ`.

Only redelivered messages touch the database: the normal path costs nothing. A worker restarted
while holding prefetched messages also makes them `redelivered`, so the limit leaves room for a few
restarts. The count is committed before the actor runs: if the process dies on the actor's first
line, the next delivery still sees it.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import structlog
from dramatiq.middleware import Middleware, SkipMessage

log = structlog.get_logger("worker")

_COUNT_REDELIVERY = (
    "INSERT INTO outbox_messageredelivery (message_id, queue_name, actor_name, redeliveries, first_redelivered_at) "
    "VALUES (%s, %s, %s, 1, now()) ON CONFLICT (message_id) DO UPDATE "
    "SET redeliveries = outbox_messageredelivery.redeliveries + 1 RETURNING redeliveries"
)


def message_redelivery_count(*, message_id: str, queue_name: str, actor_name: str) -> int:
    """Count one more redelivery of the message (committed at once); returns its redeliveries."""
    from django.db import connection, transaction

    from apps.outbox.models import MessageRedelivery

    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(_COUNT_REDELIVERY, [message_id, queue_name, actor_name])
                return cursor.fetchone()[0]
        row, _ = MessageRedelivery.objects.select_for_update().get_or_create(
            message_id=message_id, defaults={"queue_name": queue_name, "actor_name": actor_name}
        )
        row.redeliveries += 1
        row.save(update_fields=["redeliveries"])
        return row.redeliveries


def message_redelivery_reject(*, message_id: str) -> None:
    from django.utils import timezone

    from apps.outbox.models import MessageRedelivery

    MessageRedelivery.objects.filter(message_id=message_id, rejected_at__isnull=True).update(rejected_at=timezone.now())


class PoisonMessageGuard(Middleware):
    """Dead-letters a message delivered more than BROKER_MAX_DELIVERIES times (see the module doc)."""

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        if not getattr(message, "redelivered", False):  # only RabbitMQ's consumer sets it
            return
        from django.conf import settings

        redeliveries = message_redelivery_count(
            message_id=message.message_id, queue_name=message.queue_name, actor_name=message.actor_name
        )
        deliveries = redeliveries + 1
        if deliveries <= settings.BROKER_MAX_DELIVERIES:
            return
        message_redelivery_reject(message_id=message.message_id)
        log.error(
            "worker.poison_message",
            error_code="poison_message",
            message_id=message.message_id,
            actor=message.actor_name,
            queue=message.queue_name,
            deliveries=deliveries,
            limit=settings.BROKER_MAX_DELIVERIES,
        )
        message.fail()  # failed: the consumer nacks it without requeue, to the dead-letter queue
        raise SkipMessage(f"delivered {deliveries} times")
