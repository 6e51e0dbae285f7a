"""Phase 3, relay: rows per second one and two relays publish, and the outbox's lag at a steady load."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import psycopg

from apps.webhooks.apply_actor import APPLY_ACTOR
from bench import report
from bench.harness import Bench, schedule_stats
from bench.stack import (
    cpu_ms_per,
    cpu_usage,
    wait_until,
)


def run(bench: Bench) -> dict[str, Any]:
    bench.outbox_mark_published()
    result: dict[str, Any] = {}
    if not bench.relays:
        bench.start_relay()
    bench.log(f"relay: one relay publishing {bench.config.relay_rows:,} rows")
    result["one"] = relay_drain(bench, bench.config.relay_rows)
    bench.log(f"relay: one relay {result['one']['rows_per_s']:,.0f} rows/s; now two relays")
    second = bench.start_relay()
    result["two"] = relay_drain(bench, bench.config.relay_rows)
    bench.log(f"relay: two relays {result['two']['rows_per_s']:,.0f} rows/s")
    bench.stop(second)
    bench.relays.remove(second)
    bench.queues_drop("bench_relay")
    if bench.web is None:
        bench.start_web()
    rate, seconds = bench.config.lag_rate, bench.config.lag_seconds
    bench.log(f"relay: lag at a steady {rate:g} webhooks/s for {seconds:g} s")
    window_start = dt.datetime.now(dt.UTC)
    before = bench.watcher.cpu_snapshot()
    sent = bench.loadgen("lag", mode="open", rate=rate, duration=seconds)
    after = bench.watcher.cpu_snapshot()
    wait_until(lambda: bench.outbox_pending() == 0, timeout=120, what="the relay to publish the lag rows")
    lags = [
        row[0] * 1000
        for row in bench.sql(
            "SELECT extract(epoch FROM published_at - created_at)::float8 FROM outbox_outboxmessage "
            "WHERE queue_name = %s AND created_at >= %s",
            [APPLY_ACTOR["queue_name"], window_start],
        )
    ]
    accepted = sum(1 for r in sent["records"] if r[3] == 202)
    result["lag"] = {
        "rate": rate,
        "seconds": seconds,
        "accepted": accepted,
        "rows": len(lags),
        "p50_ms": report.percentile(lags, 50),
        "p99_ms": report.percentile(lags, 99),
        "max_ms": max(lags) if lags else None,
        "schedule": schedule_stats(sent),
        "cpu_cores": cpu_usage(before, after),
    }
    bench.log(f"relay: lag p50 {result['lag']['p50_ms']:.1f} ms, p99 {result['lag']['p99_ms']:.1f} ms")
    bench.queues_drop(APPLY_ACTOR["queue_name"], purge_only=True)
    return result


def relay_drain(bench: Bench, rows: int) -> dict[str, Any]:
    """Insert `rows` unpublished rows in one transaction; time commit to the last confirm."""
    wait_until(lambda: bench.outbox_pending() == 0, timeout=60, what="an empty outbox")
    marker = dt.datetime.now(dt.UTC)
    before = bench.watcher.cpu_snapshot()
    with psycopg.connect(bench.dsn) as conn:
        conn.execute(
            "INSERT INTO outbox_outboxmessage (id, queue_name, actor_name, kwargs, options, created_at,"
            " available_at, published_at) SELECT gen_random_uuid(), 'bench_relay', %s,"
            " jsonb_build_object('event_id', gen_random_uuid()::text),"
            " jsonb_build_object('correlation_id', gen_random_uuid()::text), now(), now(), NULL"
            " FROM generate_series(1, %s)",
            [APPLY_ACTOR["actor_name"], rows],
        )
    committed = time.time()
    wait_until(
        lambda: bench.outbox_pending() == 0,
        timeout=max(120.0, rows / 50),
        interval=0.05,
        what=f"the relay to publish {rows} rows",
    )
    after = bench.watcher.cpu_snapshot()
    last = bench.sql(
        "SELECT max(published_at) FROM outbox_outboxmessage WHERE queue_name = 'bench_relay' AND created_at >= %s",
        [marker],
    )[0][0]
    elapsed = last.timestamp() - committed
    depth = bench.queue_depth("bench_relay")
    bench.queues_drop("bench_relay", purge_only=True)
    return {
        "rows": rows,
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "relays": len(bench.relays),
        "queue_depth_after": depth,
        "cpu_cores": cpu_usage(before, after),
        "cpu_ms_per_row": cpu_ms_per(before, after, rows, ("relay", "postgres", "rabbitmq")),
    }
