"""`python -m bench.support_pages` at a tiny scale: seeds, times every support page and prints a
figure for each (or says why a page was skipped). It never checks speed: that is for the
million-row run in docs/performance.md."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bench.stack import database_drop, database_exists

ROOT = Path(__file__).resolve().parents[2]
PAGES = [
    "notification list",
    "notification list, status=dead",
    "notification list, search e-mail",
    "notification list, search registration id",
    "notification change page",
    "registration change page",
    "attendee story page",
    "registration list, search e-mail",
    "registration list, search delivery id",
    "registration list, search rejected delivery id",
    "registration list, search notification id",
    "status page",
]

pytestmark = pytest.mark.slow


def test_support_pages_bench_seeds_and_times_every_page(tmp_path: Path) -> None:
    name = f"support_bench_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    out = tmp_path / "figures.json"
    # The bench makes its own database; BROKER_URL stays this run's vhost (the status page reads it).
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.support_pages",
                "--rows",
                "2000",
                "--requests",
                "3",
                "--db-name",
                name,
                "--json-out",
                str(out),
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        leftover = database_exists(name)
    finally:
        database_drop(name)

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert not leftover, "the bench left its database behind"
    figures = {page["page"]: page for page in json.loads(out.read_text())["pages"]}
    for page in PAGES:
        assert figures[page]["status"] == 200, figures[page]
        assert figures[page]["p50_ms"] > 0 and figures[page]["p95_ms"] >= figures[page]["p50_ms"]
        assert f"| {page} | {figures[page]['p50_ms']} |" in result.stdout  # the printed table
    # The searches found the attendee's two notifications: the seeded data is what the pages read.
    assert figures["notification list, search e-mail"]["listed"] == 2
    assert figures["notification list, search registration id"]["listed"] == 2
    assert figures["notification list, status=dead"]["listed"] == 80  # 4 % of 2,000
    # Each registration search found the one attendee (a delivery or notification id names one).
    for search in ("e-mail", "delivery id", "rejected delivery id", "notification id"):
        assert figures[f"registration list, search {search}"]["listed"] == 1, search
    # The story of R-480: its applied and its rejected delivery (found by the payload's registration
    # id), the applied event, two notifications and an attempt of each.
    assert figures["attendee story page"]["listed"] == 7
    assert "/registration/480/story/" in figures["attendee story page"]["url"]
