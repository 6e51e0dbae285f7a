"""`--scale-out`: the whole pipeline under the same load, step by step with more processes."""

from __future__ import annotations

import json
import time
from typing import Any

from bench.harness import Bench
from bench.stack import (
    cpu_ms_per,
    cpu_usage,
    wait_until,
)
from tests.support.processes import ManagedProcess


def run(bench: Bench) -> dict[str, Any]:
    """The whole pipeline under the same closed-loop load, step by step with more processes:
    one gunicorn (2 workers), one relay and one `rundramatiq --processes 1` first; then a second
    relay; then a second `rundramatiq` (a second machine's worker); then twice the web workers.
    Each step: accepted webhooks/s while the load runs, e-mails/s from the first webhook to the
    last e-mail, the share each relay and each worker group did (from their logs), and the
    check that nothing was doubled: one e-mail per webhook at the SMTP sink, rows published
    by the relays adding up to the rows created (no row published by two relays)."""
    steps = [
        ("1 web (2 workers), 1 relay, 1 worker", 2, 1, 1),
        ("+ a second relay", 2, 2, 1),
        ("+ a second worker group", 2, 2, 2),
        ("+ web workers (4)", 4, 2, 2),
    ]
    workers: list[ManagedProcess] = []
    results = []
    for index, (label, web_workers, relays, worker_groups) in enumerate(steps):
        if bench.web is None or bench.web_workers != web_workers:
            if bench.web is not None:
                bench.stop(bench.web)
            bench.start_web(workers=web_workers)
        while len(bench.relays) < relays:
            bench.start_relay()
        while len(workers) < worker_groups:
            worker = bench.start_worker(f"worker-{len(workers) + 1}", processes=1)
            bench.wait_worker_ready(worker, processes=1)
            workers.append(worker)
        bench.log(f"scale-out: {label}: {bench.config.scale_clients} clients for {bench.config.scale_seconds:g} s")
        results.append(
            {
                "step": label,
                "web_workers": bench.web_workers,
                "relays": len(bench.relays),
                "worker_groups": len(workers),
            }
            | scaleout_run(bench, f"so{index}", workers)
        )
        r = results[-1]
        bench.log(
            f"scale-out: {label}: {r['accepted_per_s']:,.0f} accepted/s, {r['emails_per_s']:,.0f} e-mails/s "
            f"end to end, relays {r['published_by_relay']}, workers {r['sent_by_worker']}, "
            f"missing {r['missing']}, duplicates {r['duplicates']}"
        )
    base = results[0]
    for r in results:
        for key in ("accepted_per_s", "emails_per_s"):
            r[f"{key}_vs_first"] = round(r[key] / base[key], 2) if base[key] else None
    return {"steps": results}


def scaleout_run(bench: Bench, prefix: str, workers: list[ManagedProcess]) -> dict[str, Any]:
    logs = {p.name: p.log_path.stat().st_size for p in [*bench.relays, *workers]}
    created_before = bench.sql("SELECT count(*) FROM outbox_outboxmessage")[0][0]
    before = bench.watcher.cpu_snapshot()
    sent = bench.loadgen(
        prefix,
        mode="closed",
        clients=bench.config.scale_clients,
        duration=bench.config.scale_seconds,
        max_requests=int(3000 * bench.config.scale_seconds) + 1000,
    )
    accepted = {f"{prefix}-{r[0]}@example.org": r[1] for r in sent["records"] if r[3] == 202}
    try:
        wait_until(
            lambda: len(bench.delivered(accepted)) >= len(accepted) and bench.outbox_pending() == 0,
            timeout=bench.config.drain_timeout * 2,
            interval=0.5,
            what="the e-mails",
        )
    except TimeoutError:
        pass
    time.sleep(2)  # a duplicate would arrive within this window
    after = bench.watcher.cpu_snapshot()
    found = bench.delivered(accepted)
    records = sent["records"]
    start, end = min(r[1] for r in records), max(r[1] + r[2] for r in records)
    created = bench.sql("SELECT count(*) FROM outbox_outboxmessage")[0][0] - created_before

    def counted(process: ManagedProcess, pattern: str, field: str | None) -> int:
        with process.log_path.open("rb") as handle:
            handle.seek(logs[process.name])
            lines = handle.read().decode(errors="replace").splitlines()
        total = 0
        for line in lines:
            if pattern in line:
                try:
                    total += json.loads(line)[field] if field else 1
                except (ValueError, KeyError):
                    continue
        return total

    published = {p.name: counted(p, '"relay.published"', "count") for p in bench.relays}
    sent_by = {p.name: counted(p, '"notification.sent"', None) for p in workers}
    return {
        "accepted": len(accepted),
        "accepted_per_s": len(accepted) / (end - start),
        "delivered": len(found),
        "missing": len(accepted) - len(found),
        "duplicates": bench.duplicates(accepted),
        "emails_per_s": len(found) / (max(found.values()) - start) if found else 0.0,
        "outbox_rows_created": created,
        "published_by_relay": published,
        "published_total": sum(published.values()),
        "sent_by_worker": sent_by,
        "cpu_cores": cpu_usage(before, after),
        # Hardly moves with other people's load, unlike the rates: what a webhook costs end to end.
        "cpu_ms_per_webhook": cpu_ms_per(
            before, after, len(accepted), ("web", "relay", "worker", "postgres", "rabbitmq")
        ),
    }
