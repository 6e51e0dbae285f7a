"""Plain INSERTs for the workers' hot paths, where building the SQL was most of the ORM's cost.

`insert(obj)` and `insert_many(objs)` write new model instances as `save()` / `bulk_create()`
would (field defaults, `auto_now`, each field's own conversion for the database), with the
statement text built once per model and row count instead of on every call. No signals, no
primary key read back: for rows whose id is set in Python (a UUID) or never read afterwards.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from django.db import connection, models


@functools.cache
def _columns(model: type[models.Model]) -> tuple[models.Field, ...]:
    """The concrete fields an INSERT writes: all but a database-generated (auto-increment) key."""
    return tuple(field for field in model._meta.concrete_fields if not field.db_returning)


@functools.cache
def _statement(model: type[models.Model], rows: int) -> str:
    columns = ", ".join(connection.ops.quote_name(field.column) for field in _columns(model))
    row = "(" + ", ".join(["%s"] * len(_columns(model))) + ")"
    return f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({columns}) VALUES {', '.join([row] * rows)}"


def insert_statement(model: type[models.Model]) -> str:
    """The one-row INSERT, for use inside a larger statement (a CTE); its parameters are values(obj)."""
    return _statement(model, 1)


def values(obj: models.Model) -> list[object]:
    return [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in _columns(type(obj))]


def insert(obj: models.Model) -> None:
    insert_many([obj])


def insert_many(objs: Sequence[models.Model]) -> None:
    """One INSERT for objects of one model."""
    if not objs:
        return
    model = type(objs[0])
    with connection.cursor() as cursor:
        cursor.execute(_statement(model, len(objs)), [value for obj in objs for value in values(obj)])
    for obj in objs:  # as saved: a later save() updates instead of inserting again
        obj._state.adding, obj._state.db = False, connection.alias
