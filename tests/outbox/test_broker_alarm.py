"""The workers' broker connection: a RabbitMQ memory alarm fails a publish instead of hanging it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import dramatiq
import pytest
from django.conf import settings
from dramatiq.errors import ConnectionClosed

from eventplatform.broker import ClusterRabbitmqBroker
from tests.support.rabbit_cluster import RabbitCluster, rabbitmqctl


def test_the_workers_broker_carries_a_blocked_connection_timeout_and_a_heartbeat() -> None:
    broker = ClusterRabbitmqBroker(**settings.DRAMATIQ_BROKER["OPTIONS"])
    for params in broker.parameters if isinstance(broker.parameters, list) else [broker.parameters]:
        assert params.blocked_connection_timeout == settings.BROKER_BLOCKED_CONNECTION_TIMEOUT == 30.0
        assert params.heartbeat == settings.BROKER_HEARTBEAT == 60


@pytest.fixture
def node() -> Iterator[RabbitCluster]:
    # A node of its own: an alarm on the shared RabbitMQ would block every other test's publishes.
    cluster = RabbitCluster(size=1)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_publish_during_a_memory_alarm_fails_within_the_timeout_instead_of_hanging(node: RabbitCluster) -> None:
    broker = ClusterRabbitmqBroker(url=[node.nodes[0].url()], confirm_delivery=True, blocked_connection_timeout=2)
    broker.declare_queue("alarmed")
    message = dramatiq.Message(queue_name="alarmed", actor_name="nothing", args=(), kwargs={}, options={})
    outcome: list[BaseException | None] = []

    def publish() -> None:
        try:
            broker.enqueue(message)
            outcome.append(None)
        except BaseException as error:  # noqa: BLE001 - the outcome is what the test checks
            outcome.append(error)

    rabbitmqctl(node.nodes[0].name, "set_vm_memory_high_watermark", "0.0000001")
    try:
        started = time.monotonic()
        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        # Dramatiq tries 6 times, each connection blocked for 2 s before pika closes it
        thread.join(timeout=60)
        elapsed = time.monotonic() - started
        assert not thread.is_alive(), "the publish hung during the alarm"
        assert len(outcome) == 1 and isinstance(outcome[0], ConnectionClosed), outcome
        assert elapsed < 60
    finally:
        rabbitmqctl(node.nodes[0].name, "set_vm_memory_high_watermark", "0.4")
        broker.close()
