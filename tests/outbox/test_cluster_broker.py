"""ClusterRabbitmqBroker against the real RabbitMQ: node lists and quorum queues (single node
here; tests/outbox/test_rabbitmq_cluster.py runs a real three-node cluster)."""

from __future__ import annotations

import uuid

import pytest

from apps.outbox.publisher import ConfirmingPublisher, OutgoingMessage
from eventplatform.broker import ClusterRabbitmqBroker, split_broker_urls
from tests.outbox.test_publisher import amqp_url, rabbitmqctl
from tests.support.polling import free_port

pytestmark = pytest.mark.timeout(120)


def test_broker_url_lists_split_on_commas_semicolons_and_spaces() -> None:
    assert split_broker_urls(" amqp://a:1/v, amqp://b:2/v;amqp://c:3/v \n amqp://d:4/v ") == [
        "amqp://a:1/v",
        "amqp://b:2/v",
        "amqp://c:3/v",
        "amqp://d:4/v",
    ]
    assert split_broker_urls("") == []


def test_quorum_rejects_priorities_and_unknown_types() -> None:
    with pytest.raises(ValueError, match="x-max-priority"):
        ClusterRabbitmqBroker(url="amqp://127.0.0.1:1/", queue_type="quorum", max_priority=5, middleware=[])
    with pytest.raises(ValueError, match="BROKER_QUEUE_TYPE"):
        ClusterRabbitmqBroker(url="amqp://127.0.0.1:1/", queue_type="stream", middleware=[])


@pytest.fixture
def vhost():
    name = f"test_cluster_broker_{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        rabbitmqctl("delete_vhost", name)


def queue_types(vhost: str) -> dict[str, tuple[str, str]]:
    out = rabbitmqctl("list_queues", "-q", "--no-table-headers", "-p", vhost, "name", "type", "arguments")
    return {row[0]: (row[1], row[2]) for row in (line.split("\t") for line in out.splitlines() if line)}


def test_quorum_declares_queue_delay_and_dead_letter_queues_and_the_relay_publishes_to_them(vhost) -> None:
    # Given a dead first node and a live second one, and BROKER_QUEUE_TYPE=quorum
    urls = [amqp_url(vhost, port=free_port()), amqp_url(vhost)]
    broker = ClusterRabbitmqBroker(
        url=",".join(urls), queue_type="quorum", delivery_limit=7, confirm_delivery=True, middleware=[]
    )
    publisher = ConfirmingPublisher(urls, declare_queue=lambda name: broker.declare_queue(name, ensure=True))
    try:
        # When the relay publishes to a queue nothing declared yet
        publisher.publish_batch([OutgoingMessage("orders", b"{}", str(uuid.uuid4())) for _ in range(3)])
        counts = broker.get_queue_message_counts("orders")
    finally:
        publisher.close()
        broker.close()
    # Then all three queues are quorum queues; only the main queue has a delivery limit
    types = queue_types(vhost)
    assert {name: kind for name, (kind, _) in types.items()} == {
        "orders": "quorum",
        "orders.DQ": "quorum",
        "orders.XQ": "quorum",
    }
    assert "x-delivery-limit" in types["orders"][1] and "x-delivery-limit" not in types["orders.DQ"][1]
    assert "x-dead-letter-routing-key" in types["orders.DQ"][1]
    assert counts == (3, 0, 0)


def test_classic_stays_classic(vhost) -> None:
    broker = ClusterRabbitmqBroker(url=amqp_url(vhost), middleware=[])
    try:
        broker.declare_queue("plain", ensure=True)
    finally:
        broker.close()
    assert {name: kind for name, (kind, _) in queue_types(vhost).items()} == {
        "plain": "classic",
        "plain.DQ": "classic",
        "plain.XQ": "classic",
    }
