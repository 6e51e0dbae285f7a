"""Phase 5, end to end: webhooks at a steady rate through the whole stack to the SMTP sink."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bench import report
from bench.harness import STACK_KINDS, Bench, schedule_stats
from bench.stack import (
    cpu_ms_per,
    cpu_usage,
    wait_until,
)


def run(bench: Bench) -> dict[str, Any]:
    bench.start_stack()
    # What the stack costs doing nothing (polls, heartbeats, timers): at low rates it is a
    # visible part of the CPU per webhook.
    time.sleep(2)
    before = bench.watcher.cpu_snapshot()
    time.sleep(bench.config.idle_seconds)
    idle = cpu_usage(before, bench.watcher.cpu_snapshot())
    bench.log("e2e: idle stack uses " + ", ".join(f"{k} {v:.3f}" for k, v in idle.items() if v >= 0.001) + " cores")
    rates = {}
    for rate in report.E2E_RATES:
        seconds = bench.config.e2e_seconds if rate == min(report.E2E_RATES) else bench.config.e2e_sustained_seconds
        bench.log(f"e2e: {rate} webhooks/s for {seconds:g} s")
        rates[rate] = e2e_run(bench, rate, seconds)
        r = rates[rate]
        bench.log(
            f"e2e: {rate}/s: p50 {r['p50_ms'] or 0:.0f} ms, p95 {r['p95_ms'] or 0:.0f} ms, "
            f"p99 {r['p99_ms'] or 0:.0f} ms, backlog at end {r['backlog_at_end']}, "
            f"{'kept up' if r['kept_up'] else 'fell behind'}"
        )
    return {"rates": rates, "idle_cpu_cores": idle}


def e2e_run(bench: Bench, rate: int, seconds: float) -> dict[str, Any]:
    prefix = f"e2e{rate}"
    before = bench.watcher.cpu_snapshot()
    spies = bench.spy_stack(f"e2e{rate}", seconds)
    sent = bench.loadgen(prefix, mode="open", rate=rate, duration=seconds)
    profiles = {kind: bench.spy_finish(spy, f"e2e{rate}-{kind}") for kind, spy in spies.items()}
    accepted = {f"{prefix}-{r[0]}@example.org": r[1] for r in sent["records"] if r[3] == 202}
    window_end = max(r[1] for r in sent["records"])
    try:
        wait_until(
            lambda: len(bench.delivered(accepted)) >= len(accepted),
            timeout=bench.config.drain_timeout,
            interval=0.2,
            what="the e-mails",
        )
    except TimeoutError:
        pass
    after = bench.watcher.cpu_snapshot()  # sending and draining: all the work these webhooks caused
    found = bench.delivered(accepted)
    latencies = [(found[r] - accepted[r]) * 1000 for r in found]
    backlog = sum(1 for r, t_sent in accepted.items() if t_sent <= window_end and found.get(r, 1e18) > window_end)
    missing = len(accepted) - len(found)
    records = sent["records"]
    achieved = len(records) / (max(r[1] for r in records) - min(r[1] for r in records))
    return {
        "rate": rate,
        "seconds": seconds,
        "sent": len(records),
        "accepted": len(accepted),
        "achieved_per_s": achieved,
        "delivered": len(found),
        "missing": missing,
        "duplicates": bench.duplicates(accepted),
        "p50_ms": report.percentile(latencies, 50),
        "p95_ms": report.percentile(latencies, 95),
        "p99_ms": report.percentile(latencies, 99),
        "max_ms": max(latencies) if latencies else None,
        "backlog_at_end": backlog,
        # Kept up: every e-mail arrived, and what was still in flight when the last webhook was
        # sent is at most one second of traffic (Little's law: rate x latency when it keeps up).
        "kept_up": missing == 0 and backlog <= rate,
        "drain_after_end_s": (max(found.values()) - window_end) if found else None,
        "http_statuses": dict(Counter(str(r[3]) for r in records)),
        "schedule": schedule_stats(sent),
        "cpu_cores": cpu_usage(before, after),
        "cpu_ms_per_webhook": cpu_ms_per(before, after, len(accepted), (*STACK_KINDS, "smtp_sink")),
        **({"profiles": profiles} if bench.args.profile else {}),
    }
