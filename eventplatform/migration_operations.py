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
