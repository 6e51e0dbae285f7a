"""Phase 4, workers: registrations applied and confirmation e-mails sent from full queues."""

from __future__ import annotations

from collections import Counter
from typing import Any

from apps.notifications.actor_names import QUEUE_NAME as NOTIFICATIONS_QUEUE
from apps.webhooks.apply_actor import APPLY_ACTOR
from bench.harness import Bench, PhaseFailed
from bench.stack import (
    cpu_ms_per,
    cpu_usage,
    wait_until,
)


def run(bench: Bench) -> dict[str, Any]:
    total = bench.config.worker_notifications
    if bench.web is None:
        bench.start_web()
    if not bench.relays:
        bench.start_relay()
    bench.queues_drop(APPLY_ACTOR["queue_name"], NOTIFICATIONS_QUEUE, purge_only=True)
    bench.log(f"workers: posting {total:,} webhooks, then applying them with the registrations queue only")
    sent = bench.loadgen("wk", mode="closed", clients=16, count=total)
    accepted = sum(1 for r in sent["records"] if r[3] == 202)
    if accepted != total:
        raise PhaseFailed(f"only {accepted} of {total} webhooks accepted: {Counter(r[3] for r in sent['records'])}")

    def created_count() -> int:
        return bench.sql("SELECT count(*) FROM notifications_notification WHERE recipient LIKE 'wk-%'")[0][0]

    def notifications_ready() -> bool:
        return created_count() >= total and bench.outbox_pending() == 0

    # CPU per item is counted from the moment every worker process is ready (start-up excluded).
    # Applying only: the sends queue up as notification_send messages (the path of retries,
    # replays and reminders), drained below by the workers as deployed.
    applier = bench.start_worker("worker-apply", queues=[APPLY_ACTOR["queue_name"]], NOTIFICATION_SEND_AT_ONCE="false")
    bench.wait_worker_ready(applier)
    apply_before, applied_before = bench.watcher.cpu_snapshot(), created_count()
    spy = bench.spy(applier, "apply", min(30.0, total / 100 + 1))

    try:
        wait_until(
            lambda: notifications_ready() or not applier.alive(),
            timeout=max(120.0, total / 10),
            interval=0.5,
            what=f"{total} notifications to be created",
        )
        apply_after = bench.watcher.cpu_snapshot()
    finally:
        bench.stop(applier)
    apply_profile = bench.spy_finish(spy, "apply")
    first, last = bench.sql(
        "SELECT min(created_at), max(created_at) FROM notifications_notification WHERE recipient LIKE 'wk-%'"
    )[0]
    apply_per_s = (total - 1) / (last - first).total_seconds() if total > 1 else None
    bench.log(
        f"workers: applied at {apply_per_s or 0:,.0f}/s; {total:,} notification_send messages queued "
        f"({bench.queue_depth('notifications')} in RabbitMQ); starting the workers"
    )

    def sent_count() -> int:
        return bench.sql(
            "SELECT count(*) FROM notifications_notification WHERE recipient LIKE 'wk-%' AND status = 'sent'"
        )[0][0]

    bench.worker = bench.start_worker("worker")
    bench.wait_worker_ready(bench.worker)
    before, sent_before = bench.watcher.cpu_snapshot(), sent_count()
    spy = bench.spy(bench.worker, "send", min(30.0, total / 100 + 1))

    wait_until(
        lambda: sent_count() >= total or not bench.worker.alive(),
        timeout=max(120.0, total / 10),
        interval=0.2,
        what=f"{total} e-mails to be sent",
    )
    after = bench.watcher.cpu_snapshot()
    if not bench.worker.alive():
        raise PhaseFailed(f"worker exited:\n{bench.worker.output(4000)}")
    first_claim, last_sent, dead = bench.sql(
        "SELECT min(claimed_at), max(sent_at), count(*) FILTER (WHERE status <> 'sent') "
        "FROM notifications_notification WHERE recipient LIKE 'wk-%'"
    )[0]
    elapsed = (last_sent - first_claim).total_seconds()
    at_sink = len({r[2] for r in bench.sink_records() if r[2].startswith("wk-")})
    per_s = total / elapsed
    send_profile = bench.spy_finish(spy, "send")
    bench.log(f"workers: {per_s:,.0f} e-mails/s")
    return {
        NOTIFICATIONS_QUEUE: total,
        "emails_per_s": per_s,
        "emails_per_s_per_process": per_s / bench.config.worker_processes,
        "seconds": elapsed,
        "apply_per_s": apply_per_s,
        "apply_cpu_cores": cpu_usage(apply_before, apply_after),
        "apply_cpu_ms_per_event": cpu_ms_per(
            apply_before, apply_after, total - applied_before, ("worker", "postgres", "rabbitmq", "relay")
        ),
        "cpu_ms_per_email": cpu_ms_per(
            before, after, total - sent_before, ("worker", "postgres", "rabbitmq", "smtp_sink")
        ),
        "received_by_smtp": at_sink,
        "not_sent": dead,
        "processes": bench.config.worker_processes,
        "threads": bench.config.worker_threads,
        "cpu_cores": cpu_usage(before, after),
        **({"profile_apply": apply_profile, "profile_send": send_profile} if bench.args.profile else {}),
    }
