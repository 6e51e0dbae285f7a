"""Phase 1, raw limits: PostgreSQL two-row transactions (pgbench), RabbitMQ confirmed publishes,
and Dramatiq actors that do nothing or send a bare e-mail: the ceilings the pipeline works under."""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from apps.outbox.publisher import ConfirmingPublisher, OutgoingMessage
from apps.webhooks.apply_actor import APPLY_ACTOR
from bench.harness import PORTAL_SLUG, Bench, PhaseFailed
from bench.loadgen import webhook_body
from bench.stack import (
    PYTHON,
    cpu_ms_per,
    cpu_usage,
    wait_until,
)


def run(bench: Bench) -> dict[str, Any]:
    result: dict[str, Any] = {}
    bench.log("raw: PostgreSQL two-row insert transactions with pgbench")
    result["pg"] = raw_pg(bench)
    bench.log(f"raw: {result['pg']['commits_per_s']:,.0f} commits/s; RabbitMQ confirmed publishes")
    result["rabbitmq"] = raw_rabbitmq(bench)
    bench.log(f"raw: {result['rabbitmq']['publishes_per_s']:,.0f} publishes/s; Dramatiq no-op actor")
    result["noop"] = raw_actor(bench, "bench_noop", bench.config.noop_messages)
    bench.log(f"raw: no-op {result['noop']['per_s']:,.0f}/s; bare e-mail actor")
    result["bare_email"] = raw_actor(bench, "bench_email", bench.config.email_messages)
    bench.log(f"raw: bare e-mail {result['bare_email']['per_s']:,.0f}/s")
    return result


def raw_pg(bench: Bench) -> dict[str, Any]:
    """pgbench, 16 connections, each transaction one event row and one outbox row.

    The tables are copies of the real ones (same columns, indexes, unique constraints, the
    event's foreign key to the portal and a statement-level NOTIFY trigger on the outbox), so
    the database does what the web view makes it do, and nothing else."""
    bench.sql("""
        CREATE TABLE bench_event (LIKE webhooks_webhookevent INCLUDING ALL);
        ALTER TABLE bench_event ADD FOREIGN KEY (portal_id) REFERENCES webhooks_portal (id);
        CREATE TABLE bench_outbox (LIKE outbox_outboxmessage INCLUDING ALL);
        CREATE FUNCTION bench_outbox_notify() RETURNS trigger AS $$
        BEGIN PERFORM pg_notify('bench_outbox_new', ''); RETURN NULL; END; $$ LANGUAGE plpgsql;
        CREATE TRIGGER bench_outbox_notify AFTER INSERT ON bench_outbox
            FOR EACH STATEMENT EXECUTE FUNCTION bench_outbox_notify();
    """)
    portal_id = bench.sql("SELECT id FROM webhooks_portal WHERE slug = %s", [PORTAL_SLUG])[0][0]
    body = webhook_body("pgbench", 0).decode().replace("'", "''")
    script = bench.run_dir / "two_row_insert.sql"
    script.write_text(
        "BEGIN;\n"
        "INSERT INTO bench_event (id, portal_id, delivery_id, type, status, raw_body, payload, errors, received_at)"
        f" VALUES (gen_random_uuid(), {portal_id}, gen_random_uuid()::text, 'registration.created', 'accepted',"
        f" convert_to('{body}', 'UTF8'), '{body}'::jsonb, NULL, now())"
        " ON CONFLICT (portal_id, delivery_id) DO NOTHING RETURNING id;\n"
        "INSERT INTO bench_outbox (id, queue_name, actor_name, kwargs, options, created_at, available_at,"
        f" published_at) VALUES (gen_random_uuid(), '{APPLY_ACTOR['queue_name']}', '{APPLY_ACTOR['actor_name']}',"
        " jsonb_build_object('event_id', gen_random_uuid()::text),"
        " jsonb_build_object('correlation_id', gen_random_uuid()::text), now(), now(), NULL);\n"
        "COMMIT;\n"
    )
    args = [
        "pgbench",
        "-n",
        "-h",
        "127.0.0.1",
        "-p",
        "5432",
        "-U",
        "postgres",
        "-M",
        "prepared",
        "-c",
        str(bench.config.pg_clients),
        "-j",
        str(min(bench.config.pg_clients, os.cpu_count() or 1)),
        "-T",
        str(int(bench.config.pg_seconds)),
        "-f",
        str(script),
        bench.db_name,
    ]
    before = bench.watcher.cpu_snapshot()
    process = bench.start("pgbench", "pgbench", args)
    process.process.wait(timeout=bench.config.pg_seconds + 120)
    after = bench.watcher.cpu_snapshot()
    output = process.output(4000)
    bench.stop(process)
    match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", output)
    latency = re.search(r"latency average = ([\d.]+) ms", output)
    if process.process.returncode != 0 or not match:
        raise PhaseFailed(f"pgbench failed:\n{output}")
    rows = bench.sql("SELECT count(*) FROM bench_event")[0][0]
    return {
        "commits_per_s": float(match.group(1)),
        "latency_avg_ms": float(latency.group(1)) if latency else None,
        "clients": bench.config.pg_clients,
        "seconds": bench.config.pg_seconds,
        "transactions": rows,
        "event_body_bytes": len(webhook_body("pgbench", 0)),
        "cpu_cores": cpu_usage(before, after),
        "cpu_ms_per_commit": cpu_ms_per(before, after, rows, ("postgres", "pgbench")),
    }


def raw_rabbitmq(bench: Bench) -> dict[str, Any]:
    """ConfirmingPublisher (what the relay uses), persistent 1 KB messages, confirms awaited per 100."""
    queue, total, batch = "bench_raw", bench.config.rabbit_messages, 100
    broker = RabbitmqBroker(url=bench.broker_url, middleware=[])
    broker.declare_queue(queue, ensure=True)
    body = b'{"pad":"' + b"x" * 1014 + b'"}'
    messages = [OutgoingMessage(queue, body, uuid.uuid4().hex) for _ in range(total + 1)]
    publisher = ConfirmingPublisher(bench.broker_url)
    try:
        publisher.publish_batch(messages[:1])  # connect outside the timed part
        before = bench.watcher.cpu_snapshot()
        started = time.perf_counter()
        for i in range(1, total + 1, batch):
            publisher.publish_batch(messages[i : i + batch])
        elapsed = time.perf_counter() - started
        after = bench.watcher.cpu_snapshot()
    finally:
        publisher.close()
        broker.close()
    depth = bench.queue_depth(queue)
    bench.queues_drop(queue)
    return {
        "publishes_per_s": total / elapsed,
        "messages": total,
        "batch": batch,
        "body_bytes": len(body),
        "queue_depth_after": depth,
        "cpu_cores": cpu_usage(before, after),
        "cpu_ms_per_message": cpu_ms_per(before, after, total, ("rabbitmq", "harness")),
    }


def raw_actor(bench: Bench, actor: str, total: int) -> dict[str, Any]:
    """Fill the actor's queue, then start a worker on it and time first start to last done."""
    broker = RabbitmqBroker(url=bench.broker_url, middleware=[])
    broker.declare_queue(actor, ensure=True)
    broker.close()
    publisher = ConfirmingPublisher(bench.broker_url)
    messages = []
    for _ in range(total):
        message = dramatiq.Message(queue_name=actor, actor_name=actor, args=(), kwargs={}, options={})
        messages.append(OutgoingMessage(actor, message.encode(), message.message_id))
    try:
        for i in range(0, total, 500):
            publisher.publish_batch(messages[i : i + 500])
    finally:
        publisher.close()
    stats_dir = bench.run_dir / f"stats-{actor}"
    stats_dir.mkdir()
    args = [
        PYTHON,
        "-m",
        "dramatiq",
        "--path",
        ".",
        "--processes",
        str(bench.config.worker_processes),
        "--threads",
        str(bench.config.worker_threads),
        "django_dramatiq.setup",
        "bench.actors",
        "--queues",
        actor,
    ]
    worker = bench.start(f"bench-worker-{actor}", "bench_worker", args, BENCH_STATS_DIR=str(stats_dir))

    def totals() -> tuple[int, float, float]:
        count, first, last = 0, float("inf"), 0.0
        for path in stats_dir.glob("*.json"):
            try:
                entry = json.loads(path.read_text()).get(actor)
            except (OSError, ValueError):
                continue
            if entry:
                count, first, last = count + entry[0], min(first, entry[1]), max(last, entry[2])
        return count, first, last

    try:
        bench.wait_worker_ready(worker)
        before, done_before = bench.watcher.cpu_snapshot(), totals()[0]
        wait_until(
            lambda: totals()[0] >= total or not worker.alive(),
            timeout=max(60.0, total / 20),
            interval=0.2,
            what=f"{actor} to drain {total} messages",
        )
        if not worker.alive():
            raise PhaseFailed(f"bench worker exited:\n{worker.output(4000)}")
        time.sleep(0.2)
        after = bench.watcher.cpu_snapshot()
    finally:
        bench.stop(worker)
    count, first, last = totals()
    per_s = count / (last - first)
    return {
        "per_s": per_s,
        "per_s_per_process": per_s / bench.config.worker_processes,
        "messages": count,
        "processes": bench.config.worker_processes,
        "threads": bench.config.worker_threads,
        "cpu_cores": cpu_usage(before, after),
        "cpu_ms_per_message": cpu_ms_per(before, after, count - done_before, ("bench_worker", "rabbitmq", "smtp_sink")),
    }
