"""`bench/run.py --quick` runs the whole benchmark end to end and writes a complete report.

It checks that every figure is there and positive, never how fast anything is: speed on a shared
two-core machine is for docs/performance.md, not for a pass/fail line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bench import report
from bench.stack import database_drop, database_exists, vhost_delete, vhost_exists

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_SECONDS = 420

pytestmark = pytest.mark.slow


def test_quick_bench_writes_a_complete_report(tmp_path: Path) -> None:
    # Given names of our own, so that whatever the run leaves behind can be found and removed here.
    name = f"bench_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    out = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BROKER_URL", "EMAIL_URL")}
    # Its own session: the run and everything it starts share one process group, which is ours to
    # signal by its id should the run hang; nothing is ever stopped by name.
    process = subprocess.Popen(
        [sys.executable, "bench/run.py", "--quick", "--db-name", name, "--vhost", name, "--json-out", str(out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)  # run.py stops its children and drops what it made
        try:
            output, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
        pytest.fail(f"bench/run.py --quick took over {TIMEOUT_SECONDS} s:\n{output[-6000:]}")
    finally:
        leftovers = [f"database {name}"] * database_exists(name) + [f"vhost {name}"] * vhost_exists(name)
        database_drop(name)
        vhost_delete(name)

    # Then it succeeded, cleaned up after itself, and the report holds every figure.
    assert process.returncode == 0, output[-6000:]
    assert not leftovers, f"bench/run.py left {leftovers} behind"
    assert "targets met:" in output
    data = json.loads(out.read_text())
    assert data["errors"] == []
    figures = data["figures"]
    missing = [key for key in (*report.REQUIRED_FIGURES, *report.REQUIRED_COUNTS) if key not in figures]
    assert not missing, f"figures missing from the report: {missing}"
    not_positive = {key: figures[key]["value"] for key in report.REQUIRED_FIGURES if not figures[key]["value"] > 0}
    assert not not_positive, f"figures that are not positive: {not_positive}"
    assert all(figures[key]["value"] >= 0 for key in report.REQUIRED_COUNTS)
    for key in ("ingest.c16.accepted_per_s", "relay.one.rows_per_s", "workers.emails_per_s_per_process"):
        assert figures[key]["ratio"] > 0, key
    # Every target of issue 11 (docs/performance.md) was evaluated on a figure of this run.
    assert len(data["targets"]) == 15 and all(t["met"] is not None for t in data["targets"])
    assert data["meta"]["cores"] >= 1 and data["meta"]["versions"]["Django"]
