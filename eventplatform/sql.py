"""Plain statements for the workers' hot paths, where the ORM's own machinery was most of the cost.

`insert(obj)` and `insert_many(objs)` write new model instances as `save()` / `bulk_create()`
would (field defaults, `auto_now`, each field's own conversion for the database), with the
statement text built once per model and row count instead of on every call. No signals, no
primary key read back: for rows whose id is set in Python (a UUID) or never read afterwards.

`fetch_instance(model, cursor)` reads a row a statement returned (`RETURNING` the model's
`column_list(model)`) into an instance as `Model.objects.raw()` would (each field's own conversion
from the database), with the column mapping worked out once per model and column list. The
columns are named rather than `*`: a prepared `RETURNING *` fails ("cached plan must not change
result type") in a process still running when a migration adds a column.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, TypeVar

from django.db import connection, models

M = TypeVar("M", bound=models.Model)


@functools.cache
def _insert_fields(model: type[models.Model]) -> tuple[models.Field, ...]:
    """The concrete fields an INSERT writes: all but a database-generated (auto-increment) key."""
    return tuple(field for field in model._meta.concrete_fields if not field.db_returning)


@functools.cache
def _statement(model: type[models.Model], rows: int) -> str:
    columns = ", ".join(connection.ops.quote_name(field.column) for field in _insert_fields(model))
    row = "(" + ", ".join(["%s"] * len(_insert_fields(model))) + ")"
    return f"INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({columns}) VALUES {', '.join([row] * rows)}"


@functools.cache
def column_list(model: type[models.Model]) -> str:
    """The model's concrete columns, quoted, for a RETURNING or SELECT list."""
    return ", ".join(connection.ops.quote_name(field.column) for field in model._meta.concrete_fields)


def insert_statement(model: type[models.Model]) -> str:
    """The one-row INSERT, for use inside a larger statement (a CTE); its parameters are values(obj)."""
    return _statement(model, 1)


def values(obj: models.Model) -> list[object]:
    return [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in _insert_fields(type(obj))]


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


@functools.cache
def _loader(model: type[models.Model], columns: tuple[str, ...]) -> tuple[list[int], list[tuple[int, Any, list]]]:
    """Where each of the model's concrete fields is among these columns (Model.from_db takes a full
    row in field order), and for each field that needs them the backend's and the field's
    converters, as the ORM's compiler applies them."""
    position = {column: index for index, column in enumerate(columns)}
    order, converters = [], []
    for index, field in enumerate(model._meta.concrete_fields):
        order.append(position[field.column])
        expression = field.get_col(model._meta.db_table)
        functions = connection.ops.get_db_converters(expression) + expression.get_db_converters(connection)
        if functions:
            converters.append((index, expression, functions))
    return order, converters


def fetch_instance(model: type[M], cursor: Any) -> M | None:
    """The cursor's next row (the model's columns, in any order) as an instance, or None."""
    row = cursor.fetchone()
    if row is None:
        return None
    order, converters = _loader(model, tuple(column[0] for column in cursor.description))
    field_values = [row[index] for index in order]
    for index, expression, functions in converters:
        for convert in functions:
            field_values[index] = convert(field_values[index], expression, connection)
    return model.from_db(connection.alias, None, field_values)


def database_now() -> Any:
    """The database's clock (PostgreSQL's statement_timestamp()), for comparing with times the
    database stamped (a claim's claimed_at): workers on different machines disagree by their
    clocks' skew, the database does not. The embedded SQLite mode has one machine: Python's."""
    if connection.vendor != "postgresql":
        from django.utils import timezone

        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]
