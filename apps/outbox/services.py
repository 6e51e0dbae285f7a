"""Writing to the outbox. Always called inside the caller's transaction (the change it announces)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import structlog
from django.db import connection, transaction
from django.utils import timezone

from apps.outbox.models import OutboxMessage
from eventplatform import sql

wakeup_local_relay = None  # set by an in-process relay (embedded mode) to be woken on commit


def outbox_message_fields(
    *,
    actor_name: str,
    queue_name: str,
    kwargs: dict[str, Any],
    correlation_id: str | None = None,
    delay: dt.timedelta | None = None,
    message_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """The column values of one outbox row (also used by the intake's single-statement insert).
    The row id is the Dramatiq message id: a fresh one unless the caller names it."""
    correlation_id = correlation_id or structlog.contextvars.get_contextvars().get("correlation_id")
    now = timezone.now()
    return {
        "id": message_id or uuid.uuid4(),
        "actor_name": actor_name,
        "queue_name": queue_name,
        "kwargs": kwargs,
        "options": {"correlation_id": correlation_id} if correlation_id else {},
        "created_at": now,
        "available_at": now + delay if delay else now,
    }


# The columns of a row built by outbox_message_fields, each with its placeholder for a plain-SQL
# INSERT ... SELECT (which, unlike INSERT ... VALUES, does not take the types from the columns).
_ROW_PLACEHOLDERS = {
    "id": "%s::uuid",
    "actor_name": "%s",
    "queue_name": "%s",
    "kwargs": "%s::jsonb",
    "options": "%s::jsonb",
    "created_at": "%s::timestamptz",
    "available_at": "%s::timestamptz",
}


def outbox_insert_select_sql(*, from_clause: str) -> str:
    """PostgreSQL: `INSERT INTO <outbox> (<columns>) SELECT <placeholders> FROM <from_clause>`, for a
    statement that writes its own rows and their outbox row at once (the intake, one round trip).
    Its parameters: outbox_row_params(fields), then those of `from_clause`."""
    return (
        f"INSERT INTO {OutboxMessage._meta.db_table} ({', '.join(_ROW_PLACEHOLDERS)}) "
        f"SELECT {', '.join(_ROW_PLACEHOLDERS.values())} FROM {from_clause}"
    )


def outbox_row_params(fields: dict[str, Any]) -> list[Any]:
    """The values of a row built by outbox_message_fields, in the order of outbox_insert_select_sql,
    each adapted for the database by its model field."""
    model_fields = {field.name: field for field in OutboxMessage._meta.concrete_fields}
    return [model_fields[column].get_db_prep_value(fields[column], connection) for column in _ROW_PLACEHOLDERS]


def outbox_insert(fields: dict[str, Any]) -> OutboxMessage:
    """Insert a row built by outbox_message_fields, inside the caller's transaction."""
    return outbox_insert_many([fields])[0]


def outbox_insert_many(rows: list[dict[str, Any]]) -> list[OutboxMessage]:
    """Insert rows built by outbox_message_fields in one statement, inside the caller's transaction."""
    messages = [OutboxMessage(**fields) for fields in rows]
    sql.insert_many(messages)
    if messages and connection.vendor != "postgresql" and wakeup_local_relay is not None:
        transaction.on_commit(wakeup_local_relay)
    return messages


# One plain DELETE (the ORM's delete() collects related objects first; the outbox has none), with
# the row's id as its one parameter; also run inside the `sent` statement (notifications.sending).
DISCARD_UNPUBLISHED = f"DELETE FROM {OutboxMessage._meta.db_table} WHERE id = %s AND published_at IS NULL"


def outbox_discard(message_id: uuid.UUID | str) -> bool:
    """Delete a row that is not published yet (its work was done another way); False when the relay
    published it first (its consumer then finds nothing to do)."""
    with connection.cursor() as cursor:
        cursor.execute(DISCARD_UNPUBLISHED, [OutboxMessage._meta.pk.get_db_prep_value(message_id, connection)])
        return bool(cursor.rowcount > 0)


def outbox_due_in(message_id: uuid.UUID | str, delay: dt.timedelta) -> int:
    """Make a waiting row due after `delay` from now (earlier or later than it was)."""
    return OutboxMessage.objects.filter(id=message_id, published_at__isnull=True).update(
        available_at=timezone.now() + delay
    )
