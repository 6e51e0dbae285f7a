"""eventplatform/sql.py: the hot paths' plain statements give what the ORM gives (on notifications)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.utils import timezone

from apps.notifications.models import Notification
from eventplatform import sql

pytestmark = pytest.mark.django_db


def _fields(instance: Notification) -> dict:
    return {field.attname: getattr(instance, field.attname) for field in Notification._meta.concrete_fields}


def test_fetch_instance_reads_a_returned_row_as_objects_raw_does(make_notification) -> None:
    notification = make_notification(first_name="Zoë", locale="de")
    now = timezone.now()
    Notification.objects.filter(id=notification.id).update(
        context={**notification.context, "nested": {"list": [1, 2.5, None, "ü"]}}, source_received_at=now,
        claimed_at=now - dt.timedelta(seconds=3), attempts=2, last_error_message="x" * 300)
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
