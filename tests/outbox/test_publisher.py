"""Integration tests for ConfirmingPublisher against the real RabbitMQ on 127.0.0.1:5672.

Each test module run gets its own throw-away vhost (created with rabbitmqctl),
so nothing here touches other suites' queues. The broker itself is never
stopped: "broker down / hung" is simulated with a local TCP proxy instead.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from urllib.parse import quote

import pika
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from apps.outbox.publisher import BrokerUnavailable, ConfirmingPublisher, OutgoingMessage
from tests.support.polling import free_port

pytestmark = pytest.mark.timeout(120)

RABBIT = ("127.0.0.1", 5672)


def rabbitmqctl(*args: str) -> str:
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl not found: these tests need a local RabbitMQ")
    return subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, text=True).stdout


def amqp_url(vhost: str, port: int = RABBIT[1]) -> str:
    return f"amqp://guest:guest@127.0.0.1:{port}/{quote(vhost, safe='')}"


def messages(queue: str, n: int, size: int = 64) -> list[OutgoingMessage]:
    return [OutgoingMessage(queue, b'{"p":"' + b"x" * size + b'"}', str(uuid.uuid4())) for _ in range(n)]


@pytest.fixture(scope="module")
def vhost():
    name = f"test_publisher_{uuid.uuid4().hex[:12]}"
    rabbitmqctl("add_vhost", name)
    try:
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        yield name
    finally:
        rabbitmqctl("delete_vhost", name)


@pytest.fixture
def queue(vhost):
    """A fresh durable queue in the test vhost."""
    name = f"q_{uuid.uuid4().hex[:8]}"
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url(vhost)))
    conn.channel().queue_declare(name, durable=True)
    conn.close()
    return name


@pytest.fixture
def publisher(vhost):
    pub = ConfirmingPublisher(amqp_url(vhost), confirm_timeout=5.0)
    yield pub
    pub.close()


class TcpProxy:
    """Forwards a local port to RabbitMQ; can be stopped (broker down) or paused (broker hung)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.paused = threading.Event()
        self._listener: socket.socket | None = None
        self._socks: list[socket.socket] = []

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def stop(self) -> None:
        """Refuse new connections and cut existing ones without an AMQP goodbye."""
        for s in [self._listener, *self._socks]:
            try:
                s.shutdown(socket.SHUT_RDWR)  # also wakes the thread blocked in accept()
            except OSError:
                pass
            s.close()
        self._socks.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(RABBIT)
            self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while self.paused.is_set():
                    time.sleep(0.01)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def proxy():
    p = TcpProxy()
    p.start()
    yield p
    p.paused.clear()
    p.stop()


def test_publishes_5000_messages_each_delivered_exactly_once(vhost):
    """Uses dramatiq's own declare_queue, as the outbox relay does."""
    queue = f"q_{uuid.uuid4().hex[:8]}"
    broker = RabbitmqBroker(url=amqp_url(vhost), middleware=[])
    declared: list[str] = []

    def declare(name: str) -> None:
        declared.append(name)
        broker.declare_queue(name, ensure=True)

    pub = ConfirmingPublisher(amqp_url(vhost), declare_queue=declare)
    sent = messages(queue, 5000)
    try:
        for i in range(0, len(sent), 500):
            pub.publish_batch(sent[i : i + 500])
    finally:
        pub.close()
        broker.close()
    assert declared == [queue]  # once per connection, not once per batch

    conn = pika.BlockingConnection(pika.URLParameters(amqp_url(vhost)))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=1000)
    received = []
    for method, props, _body in ch.consume(queue, auto_ack=True, inactivity_timeout=2):
        if method is None:  # queue drained (and nothing extra arrived for 2 s)
            break
        assert props.delivery_mode == 2
        assert props.content_type == "application/json"
        received.append(props.message_id)
    conn.close()
    assert len(received) == 5000
    assert set(received) == {m.message_id for m in sent}


def test_unroutable_message_raises_and_publisher_stays_usable(publisher, queue):
    with pytest.raises(BrokerUnavailable, match="returned"):
        publisher.publish_batch(messages(queue, 3) + messages("no_such_queue", 1) + messages(queue, 3))
    publisher.publish_batch(messages(queue, 10))


def test_nothing_listening_fails_fast():
    pub = ConfirmingPublisher(amqp_url("/", port=free_port()))
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        pub.publish_batch(messages("q", 1))
    assert time.monotonic() - started < 10
    pub.close()


def test_hung_listener_fails_within_connect_timeout():
    """TCP connects (kernel backlog) but no AMQP handshake ever comes back."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        pub = ConfirmingPublisher(amqp_url("/", port=silent.getsockname()[1]))
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            pub.publish_batch(messages("q", 1))
        assert time.monotonic() - started < 10
        pub.close()


def test_reconnects_after_broker_closed_the_idle_connection(publisher, vhost, queue):
    """What stop_app does to clients: Connection.Close (320) arrives while we are idle."""

    def connections() -> set[str]:  # "peer_port<TAB>state" lines for our vhost
        # list_connections has no vhost filter (-p is ignored): filter on the vhost column.
        out = rabbitmqctl("list_connections", "-q", "--no-table-headers", "vhost", "peer_port", "state")
        rows = [line.split("\t") for line in out.split("\n") if line]
        return {"\t".join(row[1:]) for row in rows if row[0] == vhost}

    publisher.publish_batch(messages(queue, 10))
    deadline = time.monotonic() + 10
    while not (before := connections()):  # connection tracking is asynchronous
        assert time.monotonic() < deadline, "broker never listed the connection"
        time.sleep(0.1)
    # The vhost may also hold the connection dramatiq's broker uses to declare queues.
    old_ports = {line.split("\t")[0] for line in before}
    assert "Closed" in rabbitmqctl("close_all_connections", "-p", vhost, "simulated restart")

    publisher.publish_batch(messages(queue, 10))  # notices the dead connection: no error

    running = {line.split("\t")[0] for line in connections() if line.endswith("running")}
    assert running and not running & old_ports


def test_same_publisher_works_again_after_broker_down_and_back(proxy, vhost, queue):
    pub = ConfirmingPublisher(amqp_url(vhost, port=proxy.port), confirm_timeout=1.0)
    try:
        pub.publish_batch(messages(queue, 100))

        proxy.stop()  # broker gone: existing connection cut, new ones refused
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable):
                pub.publish_batch(messages(queue, 100))
            assert time.monotonic() - started < 10

        proxy.start()  # broker back
        pub.publish_batch(messages(queue, 100))

        proxy.paused.set()  # broker hung: acks never arrive
        with pytest.raises(BrokerUnavailable, match="unconfirmed"):
            pub.publish_batch(messages(queue, 100))
        proxy.paused.clear()
        pub.publish_batch(messages(queue, 100))
    finally:
        pub.close()


def test_fails_over_to_the_next_node_and_back(vhost, queue):
    """Two "nodes" (proxies to the same RabbitMQ): when the one in use goes away, the next batch
    goes out through the other, without an error; with both gone it fails fast."""
    first, second = TcpProxy(), TcpProxy()
    first.start()
    second.start()
    pub = ConfirmingPublisher(
        [amqp_url(vhost, port=first.port), amqp_url(vhost, port=second.port)], confirm_timeout=2.0
    )
    try:
        pub.publish_batch(messages(queue, 50))
        first.stop()  # the node in use dies
        failures = 0
        for _ in range(3):  # at most the batch in flight fails; the relay would retry it
            try:
                pub.publish_batch(messages(queue, 50))
            except BrokerUnavailable:
                failures += 1
        assert failures <= 1
        second.stop()
        with pytest.raises(BrokerUnavailable, match="cannot connect"):
            pub.publish_batch(messages(queue, 1))
        first.start()  # the first node is back
        pub.publish_batch(messages(queue, 50))
    finally:
        pub.close()
        first.stop()
        second.stop()
