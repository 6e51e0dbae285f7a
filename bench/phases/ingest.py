"""Phase 2, ingest: signed webhooks POSTed to gunicorn, closed loop, and what each costs."""

from __future__ import annotations

import time
from typing import Any

from bench import report
from bench.harness import Bench, summarize_closed
from bench.stack import (
    cpu_ms_per,
    cpu_usage,
)


def run(bench: Bench) -> dict[str, Any]:
    if bench.web is None:
        bench.start_web()
    workers = bench.web_workers
    bench.loadgen("warm", mode="closed", clients=2 * workers, count=25 * workers)
    levels = {}
    for clients in report.INGEST_LEVELS:
        bench.log(f"ingest: {clients} clients for {bench.config.ingest_seconds:g} s")
        before = bench.watcher.cpu_snapshot()
        result = bench.loadgen(
            f"in{clients}",
            mode="closed",
            clients=clients,
            duration=bench.config.ingest_seconds,
            max_requests=int(3000 * bench.config.ingest_seconds) + 1000,
        )
        after = bench.watcher.cpu_snapshot()
        levels[clients] = summarize_closed(result) | {
            "cpu_cores": cpu_usage(before, after),
            "cpu_ms_per_accepted": cpu_ms_per(
                before, after, sum(1 for r in result["records"] if r[3] == 202), ("web", "postgres", "loadgen")
            ),
        }
        bench.log(
            f"ingest: {clients} clients: {levels[clients]['accepted_per_s']:,.0f} accepted/s, "
            f"p50 {levels[clients]['p50_ms']:.1f} ms, p99 {levels[clients]['p99_ms']:.1f} ms"
        )
    result: dict[str, Any] = {"levels": levels, "web_workers": workers}
    if bench.args.profile:
        result["profile"] = profile_ingest(bench)
    bench.outbox_mark_published()
    return result


def profile_ingest(bench: Bench) -> dict[str, Any] | None:
    """py-spy on every gunicorn worker during an extra 16-client run (not one of the figures)."""
    seconds = max(5, int(bench.config.ingest_seconds))
    spy = bench.spy(bench.web, "ingest", seconds)
    time.sleep(0.5)
    bench.loadgen("prof16", mode="closed", clients=16, duration=seconds - 1, max_requests=3000 * seconds)
    return bench.spy_finish(spy, "ingest")
