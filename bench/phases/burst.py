"""Phase 6, burst: a burst of webhooks and how long the stack takes to deliver it all."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from bench.harness import STACK_KINDS, Bench
from bench.stack import (
    cpu_ms_per,
    cpu_usage,
    wait_until,
)


def run(bench: Bench) -> dict[str, Any]:
    """A ticket drop: burst_webhooks registrations posted as fast as 16 clients can, the whole
    stack running; from the first post to the last e-mail accepted by SMTP, and none doubled."""
    bench.start_stack()
    total = bench.config.burst_webhooks
    bench.log(f"burst: {total:,} registrations from 16 clients")
    before = bench.watcher.cpu_snapshot()
    spies = bench.spy_stack("burst", min(30.0, total / 150 + 2))
    sent = bench.loadgen("burst", mode="closed", clients=16, count=total)
    profiles = {kind: bench.spy_finish(spy, f"burst-{kind}") for kind, spy in spies.items()}
    records = sent["records"]
    accepted = {f"burst-{r[0]}@example.org": r[1] for r in records if r[3] == 202}
    first_post, last_answer = min(r[1] for r in records), max(r[1] + r[2] for r in records)
    try:
        wait_until(
            lambda: len(bench.delivered(accepted)) >= len(accepted),
            timeout=bench.config.drain_timeout,
            interval=0.2,
            what="the burst's e-mails",
        )
    except TimeoutError:
        pass
    after = bench.watcher.cpu_snapshot()
    time.sleep(2)  # a duplicate would arrive within this window
    found = bench.delivered(accepted)
    last_email = max(found.values()) if found else None
    result = {
        "webhooks": total,
        "accepted": len(accepted),
        "delivered": len(found),
        "missing": len(accepted) - len(found),
        "duplicates": bench.duplicates(accepted),
        "posting_s": last_answer - first_post,
        "accepted_per_s": len(accepted) / (last_answer - first_post),
        "last_email_s": (last_email - first_post) if last_email else None,
        "emails_per_s": len(found) / (last_email - first_post) if last_email else None,
        "http_statuses": dict(Counter(str(r[3]) for r in records)),
        "cpu_cores": cpu_usage(before, after),
        "cpu_ms_per_webhook": cpu_ms_per(before, after, len(accepted), (*STACK_KINDS, "smtp_sink")),
        **({"profiles": profiles} if bench.args.profile else {}),
    }
    bench.log(
        f"burst: last e-mail {result['last_email_s'] or 0:.1f} s after the first post "
        f"({result['emails_per_s'] or 0:,.0f} e-mails/s), missing {result['missing']}, "
        f"duplicates {result['duplicates']}"
    )
    return result
