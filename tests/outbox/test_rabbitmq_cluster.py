"""The pipeline on a three-node RabbitMQ cluster with quorum queues survives losing a node.

Real processes (run_relay, rundramatiq with two worker processes) and a real aiosmtpd server;
BROKER_URL lists the three nodes, BROKER_QUEUE_TYPE=quorum. Webhooks are recorded through the
intake's service (parse + webhook_event_record, what the view calls) while the node every client
connected to first is stopped. Nothing may be lost (every registration gets its confirmation)
and nothing doubled (one e-mail per notification): publishes cut off mid-batch are published
again on another node and deduplicated by message id; deliveries unacked on the lost node are
redelivered by the queues' new leaders and find their work already done.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator

import pytest

from apps.notifications.models import Notification
from apps.outbox.models import OutboxMessage
from apps.webhooks.parsing import parse_delivery
from apps.webhooks.services import webhook_event_record
from tests.support.polling import free_port
from tests.support.processes import ManagedProcess, process_env, start_relay, start_worker, wait_until
from tests.support.rabbit_cluster import RabbitCluster, rabbitmqctl
from tests.support.smtp import SmtpServer
from tests.support.webhooks import encode, payload

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(420)]

WEBHOOKS = 60
STOP_AFTER = 20  # the first node goes down once this many webhooks are in


@pytest.fixture
def cluster() -> Iterator[RabbitCluster]:
    cluster = RabbitCluster(size=3)
    try:
        cluster.start()
        print(f"cluster of 3 nodes started in {cluster.started_seconds:.0f} s")
        yield cluster
    finally:
        cluster.stop()


def test_quorum_pipeline_loses_nothing_and_doubles_nothing_when_a_node_stops(
    portal,
    smtp_server: SmtpServer,
    cluster: RabbitCluster,
) -> None:
    cluster.add_vhost("eventplatform")
    env = process_env(
        EMAIL_URL=smtp_server.url,
        BROKER_URL=cluster.broker_url("eventplatform"),
        BROKER_QUEUE_TYPE="quorum",
        RELAY_METRICS_PORT="0",
        dramatiq_prom_port=str(free_port()),
    )
    processes: list[ManagedProcess] = [start_relay(env), start_worker(env, processes=2, threads=2)]
    relay, worker = processes
    first = cluster.nodes[0]
    try:
        started = time.monotonic()
        for number in range(WEBHOOKS):
            if number == STOP_AFTER:
                # Given traffic flowing through the first node (every client's first choice) ...
                wait_until(lambda: smtp_server.messages, timeout=90, what="the first e-mails")
                stop_started = time.monotonic()
                first.stop()  # ... when it stops (its clients are disconnected, its replicas gone)
                print(f"node {first.name} stopped in {time.monotonic() - stop_started:.1f} s")
            body = encode(payload(f"R-CLUSTER-{number}", email=f"guest{number}@example.org", phone=None))
            parsed = parse_delivery(body)
            webhook_event_record(
                portal=portal,
                delivery_id=f"msg_cluster_{number}",
                event_type=parsed.event_type,
                raw_body=body,
                payload=parsed.payload,
                errors=parsed.errors,
            )
            time.sleep(0.2)

        def all_sent() -> bool:
            return Notification.objects.filter(status="sent").count() == WEBHOOKS

        try:
            wait_until(all_sent, timeout=180, interval=1, what=f"{WEBHOOKS} sent notifications")
        except TimeoutError:
            statuses = collections.Counter(Notification.objects.values_list("status", flat=True))
            raise AssertionError(
                f"{statuses}, e-mails {len(smtp_server.messages)}\n"
                + "\n".join(f"--- {p.name} ---\n{p.output()[-4000:]}" for p in processes)
            ) from None
        elapsed = time.monotonic() - started
        time.sleep(5)  # a duplicate would arrive within this window

        # Then: nothing lost, nothing doubled
        messages = smtp_server.messages
        ids = [m["X-Eventplatform-Notification-Id"] for m in messages]
        duplicates = {i: n for i, n in collections.Counter(ids).items() if n > 1}
        print(
            f"{WEBHOOKS} webhooks -> {len(messages)} e-mails in {elapsed:.0f} s with one node stopped; "
            f"duplicates: {len(duplicates)}"
        )
        assert duplicates == {}
        assert len(messages) == WEBHOOKS
        assert sorted(m["To"] for m in messages) == sorted(f"guest{n}@example.org" for n in range(WEBHOOKS))
        assert not OutboxMessage.objects.filter(published_at__isnull=True).exists()
        assert relay.alive() and worker.alive()  # they failed over rather than exited
        # The stop reached both: their connections to the first node were closed under them.
        assert "CONNECTION_FORCED" in relay.output() and "Restarting consumer" in worker.output()
        # And the queues really are replicated quorum queues, on the surviving nodes
        listed = rabbitmqctl(
            cluster.nodes[1].name, "list_queues", "--no-table-headers", "-p", "eventplatform", "name", "type"
        ).stdout
        types = dict(line.split("\t") for line in listed.splitlines() if "\t" in line)
        for queue in ("registrations", "notifications"):
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                assert types.get(name) == "quorum", types
    finally:
        for process in processes:
            process.stop()
