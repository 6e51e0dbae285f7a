"""eventplatform/sql.py: the hot paths' plain statements give what the ORM gives (on notifications)."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from apps.notifications import sending
from apps.notifications.models import Notification
from eventplatform import sql

pytestmark = pytest.mark.django_db


def _fields(instance: Notification) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in Notification._meta.concrete_fields}


def test_fetch_instance_reads_a_returned_row_as_objects_raw_does(make_notification) -> None:
    notification = make_notification(first_name="Zoë", locale="de")
    now = timezone.now()
    Notification.objects.filter(id=notification.id).update(
        context={**notification.context, "nested": {"list": [1, 2.5, None, "ü"]}},
        source_received_at=now,
        claimed_at=now - dt.timedelta(seconds=3),
        attempts=2,
        last_error_message="x" * 300,
    )
    statement = f"UPDATE {Notification._meta.db_table} SET updated_at = updated_at WHERE id = %s RETURNING *"
    with connection.cursor() as cursor:
        cursor.execute(statement, [notification.id])
        ours = sql.fetch_instance(Notification, cursor)
    (theirs,) = Notification.objects.raw(statement, [notification.id])
    assert ours is not None and not ours._state.adding and ours._state.db == "default"
    assert _fields(ours) == _fields(theirs)
    assert ours.context["nested"] == {"list": [1, 2.5, None, "ü"]}
    assert ours.source_received_at == now


def test_fetch_instance_is_none_when_nothing_was_returned() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {Notification._meta.db_table} WHERE false")
        assert sql.fetch_instance(Notification, cursor) is None


@pytest.mark.django_db(transaction=True)
def test_a_prepared_claim_survives_a_migration_that_adds_a_column(make_notification) -> None:
    """A worker still running while `migrate` (another connection) adds a column keeps claiming:
    the claim names its columns, so its prepared plan keeps its result type (with `RETURNING *`
    PostgreSQL refuses it: "cached plan must not change result type")."""
    missing = str(uuid.uuid4())
    for _ in range(6):  # psycopg prepares a statement on its fifth run (DB_PREPARE_THRESHOLD)
        assert sending._claim(missing) is None
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    table = Notification._meta.db_table
    with psycopg.connect(**params, autocommit=True) as migrate:
        migrate.execute(f"ALTER TABLE {table} ADD COLUMN added_later integer")
        try:
            notification = make_notification()
            claimed = sending._claim(str(notification.id))
            assert claimed is not None
            assert (claimed.id, claimed.status, claimed.attempts) == (notification.id, "sending", 1)
        finally:
            migrate.execute(f"ALTER TABLE {table} DROP COLUMN added_later")
