"""Operations shared by the apps' migrations. Keep what is here stable: migrations import it forever."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import migrations


def _execute_on_postgresql(statements: list[str]) -> Callable[[Any, Any], None]:
    def execute(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor == "postgresql":
            for statement in statements:
                schema_editor.execute(statement)

    return execute


def run_sql_on_postgresql(*, up: list[str], down: list[str]) -> migrations.RunPython:
    """Run these statements on PostgreSQL only, e.g. pg_trgm indexes; SQLite (embedded mode) has no
    such extension and scans its small tables instead."""
    return migrations.RunPython(_execute_on_postgresql(up), _execute_on_postgresql(down))


def drop_field_indexes(
    *, table: str, indexes: dict[str, str], state_operations: list[Any]
) -> migrations.SeparateDatabaseAndState:
    """Fields that lose their index (`db_index=False`), applied as plain DROP INDEX statements.

    Django's AlterField rebuilds the whole table on SQLite (embedded mode), which drops its triggers
    with it (the webhook events' immutability, for one). `indexes` maps each index name to its
    column; PostgreSQL's `LIKE` twin (`<name>_like`) goes too where there is one. Reversed, the
    plain indexes come back (the twins, a PostgreSQL detail, do not).
    """
    drop = [f"DROP INDEX IF EXISTS {name}{suffix}" for name in indexes for suffix in ("", "_like")]
    create = [f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({column})" for name, column in indexes.items()]
    return migrations.SeparateDatabaseAndState(
        state_operations=state_operations, database_operations=[migrations.RunSQL(drop, create)]
    )
