"""The outbox rows that start the notifications actors, named by actor_names.py.

(The services cannot import tasks.py: tasks imports the services.)
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from apps.notifications.actor_names import PROBE_ACTOR, QUEUE_NAME, SEND_ACTOR
from apps.notifications.models import Notification
from apps.outbox.services import outbox_insert, outbox_insert_many, outbox_message_fields


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
