"""Actor and queue names, written once, and the outbox rows that start them.

tasks.py declares its actors with these names; the services write outbox rows with them. (The
services cannot import tasks.py: tasks imports the services.) tests/notifications/test_actors.py
checks the registered actors carry exactly these names.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from apps.notifications.models import Notification
from apps.outbox.services import outbox_insert, outbox_insert_many, outbox_message_fields

QUEUE_NAME = "notifications"
SEND_ACTOR = "notification_send"
DEAD_LETTER_ACTOR = "notification_dead_letter"
PROBE_ACTOR = "notification_probe"


def send_message_fields(
    notification: Notification, *, delay: dt.timedelta | None = None, message_id: uuid.UUID | None = None
) -> dict[str, Any]:
    return outbox_message_fields(
        actor_name=SEND_ACTOR,
        queue_name=QUEUE_NAME,
        kwargs={"notification_id": str(notification.id)},
        correlation_id=notification.correlation_id or None,
        delay=delay,
        message_id=message_id,
    )


def enqueue_send(notification: Notification, *, delay: dt.timedelta | None = None) -> None:
    """One outbox row for one send, inside the caller's transaction."""
    outbox_insert(send_message_fields(notification, delay=delay))


def enqueue_sends(rows: list[dict[str, Any]]) -> None:
    """Outbox rows built by send_message_fields, in one INSERT."""
    if rows:
        outbox_insert_many(rows)


def enqueue_probe(*, channel: str, delay: dt.timedelta) -> None:
    """The one probe message of a channel whose breakers are all open (breakers.py)."""
    outbox_insert(
        outbox_message_fields(actor_name=PROBE_ACTOR, queue_name=QUEUE_NAME, kwargs={"channel": channel}, delay=delay)
    )
