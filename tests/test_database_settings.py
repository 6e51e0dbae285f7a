"""PostgreSQL connection settings that the hot paths rely on (eventplatform/settings/base.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.db import connection

from tests.support.processes import ROOT, production_env


@pytest.mark.django_db
def test_a_statement_run_five_times_is_prepared_once() -> None:
    statement = "SELECT %s::int + 1 AS prepared_probe"
    with connection.cursor() as cursor:
        for number in range(6):
            cursor.execute(statement, [number])
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", ["%prepared_probe%"])
        assert cursor.fetchone()[0] == 1


@pytest.mark.parametrize(("value", "expected"), [("off", "None"), ("0", "0"), (None, "5")])
def test_db_prepare_threshold_chooses_or_turns_off_preparing(value, expected) -> None:
    env = production_env(**({"DB_PREPARE_THRESHOLD": value} if value is not None else {}))
    if value is None:
        env.pop("DB_PREPARE_THRESHOLD", None)
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "shell",
            "-c",
            "from django.conf import settings; print(settings.DATABASES['default']['OPTIONS']['prepare_threshold'])",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected
