from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class OutboxMessage(models.Model):
    """A Dramatiq message waiting to be published; written in the transaction that it announces.

    The relay publishes rows whose `available_at` has passed and sets `published_at` only after
    RabbitMQ confirmed them. The row id is the Dramatiq message id, so consumers can deduplicate.
    `available_at` in the future is a durable delay (used for long retry waits) that does not keep
    a message unacked in RabbitMQ.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    queue_name = models.CharField(max_length=100)
    actor_name = models.CharField(max_length=100)
    kwargs = models.JSONField(default=dict)
    options = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    available_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)
    # Times RabbitMQ returned or nacked this row; each pushes `available_at` back (relay.py), so a
    # row that keeps failing is retried ever later, after the rows that publish. db_default: the raw
    # INSERT of apps/webhooks/services.py does not name the column.
    publish_attempts = models.PositiveIntegerField(default=0, db_default=0)

    class Meta:
        indexes = [
            models.Index(
                fields=["available_at"], name="outbox_unpublished_idx", condition=models.Q(published_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.actor_name} {self.id}"


class MessageRedelivery(models.Model):
    """How often RabbitMQ redelivered one Dramatiq message to a worker (apps/outbox/poison.py).

    Written only for redelivered messages (a worker died or lost its connection holding them), so
    the normal path costs nothing. A row with `rejected_at` is a poison message: it was
    dead-lettered to the queue's `.XQ` instead of crashing workers forever.
    """

    message_id = models.CharField(max_length=64, primary_key=True)
    queue_name = models.CharField(max_length=100)
    actor_name = models.CharField(max_length=100)
    redeliveries = models.PositiveIntegerField(default=0)
    first_redelivered_at = models.DateTimeField(default=timezone.now)
    rejected_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.actor_name} {self.message_id} x{self.redeliveries}"
