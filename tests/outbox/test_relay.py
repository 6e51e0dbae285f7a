"""The relay against the real RabbitMQ: concurrent relays and a broker outage."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pika
import pytest
import requests
from django.utils import timezone

from apps.outbox.models import OutboxMessage
from tests.support.processes import ManagedProcess, process_env, start_relay, start_web, wait_until
from tests.support.webhooks import encode, payload, signed_headers

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def drain(queue_name: str, *, expect: int, timeout: float = 60) -> list[str]:
    """Consume every message of the queue until `expect` arrived and the queue stays empty for 1 s."""
    connection = pika.BlockingConnection(pika.URLParameters(os.environ["BROKER_URL"]))
    channel = connection.channel()
    ids: list[str] = []
    deadline, idle_since = time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline:
            method, properties, _ = channel.basic_get(queue_name, auto_ack=True)
            if method is None:
                if len(ids) >= expect:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 1:
                        break
                time.sleep(0.05)
                continue
            idle_since = None
            ids.append(properties.message_id)
    finally:
        connection.close()
    return ids


@pytest.fixture
def relays() -> Iterator[list[ManagedProcess]]:
    started: list[ManagedProcess] = []
    yield started
    for relay in started:
        relay.stop()


def test_two_relays_publish_each_of_5000_rows_exactly_once(relays: list[ManagedProcess]) -> None:
    # Given 5,000 unpublished rows for a queue no worker consumes
    now = timezone.now()
    rows = [
        OutboxMessage(
            actor_name="relay_probe", queue_name="relay_probe", kwargs={"n": n}, created_at=now, available_at=now
        )
        for n in range(5000)
    ]
    OutboxMessage.objects.bulk_create(rows, batch_size=1000)
    # When two relays drain them at the same time
    env = process_env(RELAY_METRICS_PORT="0")
    relays += [start_relay(env), start_relay(env)]
    wait_until(
        lambda: not OutboxMessage.objects.filter(published_at__isnull=True).exists(),
        timeout=120,
        what="all rows published",
    )
    # Then every row reached RabbitMQ exactly once
    ids = drain("relay_probe", expect=5000)
    assert len(ids) == 5000, f"{len(ids)} messages, {len(set(ids))} distinct"
    assert set(ids) == {str(row.id) for row in rows}
    assert all(relay.alive() for relay in relays), [relay.output()[-2000:] for relay in relays]


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=120, capture_output=True)


def test_broker_outage_loses_nothing_and_relay_resumes_by_itself(portal, relays: list[ManagedProcess]) -> None:
    env = process_env(RELAY_METRICS_PORT="0")
    web, base_url = start_web(env)
    relays.append(start_relay(env))
    sent: list[str] = []

    def send(n: int) -> None:
        for _ in range(n):
            body = encode(payload(f"R-OUT-{len(sent)}", phone=None))
            response = requests.post(
                f"{base_url}/webhooks/pretix/", data=body, headers=signed_headers(body), timeout=10
            )
            assert response.status_code == 202, response.text
            sent.append(response.json()["event_id"])

    try:
        send(20)
        wait_until(
            lambda: not OutboxMessage.objects.filter(published_at__isnull=True).exists(),
            timeout=30,
            what="the first rows published",
        )
        rabbitmqctl("stop_app")
        try:
            # While RabbitMQ is down, webhooks are still accepted: the outbox holds them.
            send(30)
            time.sleep(3)
            assert OutboxMessage.objects.filter(published_at__isnull=True).count() == 30
        finally:
            rabbitmqctl("start_app")
            rabbitmqctl("await_startup")
        wait_until(
            lambda: not OutboxMessage.objects.filter(published_at__isnull=True).exists(),
            timeout=90,
            what="the relay to resume by itself",
        )
    finally:
        web.stop()
    ids = drain("registrations", expect=50)
    outbox_ids = {str(i) for i in OutboxMessage.objects.values_list("id", flat=True)}
    assert set(ids) == outbox_ids and len(outbox_ids) == 50
    log = relays[0].output()
    assert log.count("relay.broker_unavailable") == 1, "one log line per outage, not per row or retry"
    assert "relay.broker_recovered" in log
