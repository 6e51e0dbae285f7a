"""Batched, confirmed publishing to RabbitMQ for the outbox relay.

Why not ``BlockingConnection``: with publisher confirms it waits for each ack
before sending the next message, so throughput is capped by the broker round
trip (~870 msgs/s measured).  Here a ``SelectConnection`` sends a whole batch, then
waits once for all acks (RabbitMQ acks with ``multiple=True`` where it can).

The ioloop runs *only* inside ``publish_batch`` / connecting; between batches
nothing reads the socket.  Hence heartbeats are off (no one would answer
them), and a connection the broker closed while we were idle is detected at
the start of the next batch by draining pending socket events once.

Several RabbitMQ nodes (a cluster, BROKER_URL listing them): the publisher connects to one at a
time and, when that connection fails or cannot be made, tries the next (round robin, each once
per connect). A batch whose connection dropped before all its confirms arrived raises
BrokerUnavailable; the relay keeps its rows and publishes them again on the next node, so a
message may reach RabbitMQ twice, never zero times (consumers deduplicate by message id).

Not thread-safe: use one publisher per thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dramatiq.errors
import pika
import pika.exceptions
from pika.adapters.select_connection import SelectConnection

from eventplatform.broker import connection_parameters, split_broker_urls

logger = logging.getLogger(__name__)

# Connect fast or fail fast: the relay retries, so a down broker should not
# hold a batch (and its database transaction) for long.
CONNECT_TIMEOUT = 5.0
# Grace period for a polite Connection.Close when discarding a connection.
CLOSE_TIMEOUT = 1.0


class BrokerUnavailable(Exception):
    """RabbitMQ could not be reached or did not confirm the batch."""


class MessagesRejected(BrokerUnavailable):
    """RabbitMQ settled every message of the batch but returned or nacked some (`rejected_ids`):
    the others are confirmed, the connection is fine. A subclass so callers that only know
    BrokerUnavailable still keep every row."""

    def __init__(self, message: str, *, rejected_ids: set[str]) -> None:
        super().__init__(message)
        self.rejected_ids = rejected_ids


@dataclass(frozen=True)
class OutgoingMessage:
    queue_name: str  # routing key on the default exchange ""
    body: bytes  # already-encoded dramatiq message
    message_id: str


class ConfirmingPublisher:
    def __init__(
        self,
        url: str | Sequence[str],
        *,
        confirm_timeout: float = 10.0,
        declare_queue: Callable[[str], None] | None = None,
    ) -> None:
        # One URL, a BROKER_URL listing several nodes, or the list settings.BROKER_URLS.
        urls = split_broker_urls(url) if isinstance(url, str) else [u for u in url if u]
        if not urls:
            raise ValueError("ConfirmingPublisher needs at least one broker URL")
        self._nodes = connection_parameters(urls)  # each node tried once: retrying is the caller's job
        for params in self._nodes:
            params.heartbeat = 0  # nothing services heartbeats between batches
            params.socket_timeout = params.stack_timeout = CONNECT_TIMEOUT
        self._node = 0  # index of the node connected to (or tried next)
        self._confirm_timeout = confirm_timeout
        self._declare_queue = declare_queue
        self._conn: SelectConnection | None = None
        self._channel = None
        self._ready = False  # channel open and in confirm mode
        self._error: str | None = None  # why the connection/channel went away
        self._declared: set[str] = set()  # queues declared on this connection
        self._next_tag = 1  # delivery tag the next publish will get
        self._floor = 1  # every tag below this is settled (multiple=True acks)
        self._pending: dict[int, str] = {}  # unconfirmed tag -> message_id
        self._rejected: list[str] = []  # nacked / returned, for the error
        self._rejected_ids: set[str] = set()

    def publish_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish all messages persistently (delivery_mode=2, content_type application/json,
        message_id set) and return only when RabbitMQ has acked every one; raise BrokerUnavailable
        on connection failure, nack, return (mandatory=True, unroutable) or timeout. Reconnects
        lazily on the next call after a failure."""
        if not messages:
            return
        self._ensure_connected()
        self._declare_new_queues({m.queue_name for m in messages})
        self._pending.clear()
        self._rejected.clear()
        self._rejected_ids.clear()
        self._floor = self._next_tag  # all earlier tags were settled by the previous batch
        try:
            for m in messages:
                props = pika.BasicProperties(delivery_mode=2, content_type="application/json", message_id=m.message_id)
                # mandatory: a missing queue must be an error, not a silent drop.
                self._channel.basic_publish("", m.queue_name, m.body, props, mandatory=True)
                self._pending[self._next_tag] = m.message_id
                self._next_tag += 1
        except pika.exceptions.AMQPError as exc:
            self._discard()
            self._node = (self._node + 1) % len(self._nodes)
            raise BrokerUnavailable(f"publish failed: {exc!r}") from exc
        in_time = self._run(self._confirm_timeout)
        if self._pending:
            # Timed out or lost the connection: late acks would corrupt the tag
            # bookkeeping, so start over on a fresh connection next time.
            reason = self._error or ("timed out" if not in_time else "interrupted")
            self._discard()
            self._node = (self._node + 1) % len(self._nodes)  # the next batch tries another node first
            raise BrokerUnavailable(f"{len(self._pending)} of {len(messages)} messages unconfirmed: {reason}")
        if self._rejected:  # connection is still fine; every tag is settled
            raise MessagesRejected(
                f"{len(self._rejected)} messages rejected: {'; '.join(self._rejected[:5])}",
                rejected_ids=set(self._rejected_ids),
            )

    def close(self) -> None:
        self._discard()

    # -- connection management -------------------------------------------

    def _ensure_connected(self) -> None:
        if self._conn is not None:
            # Process whatever arrived while idle (e.g. Connection.Close sent by
            # a broker being stopped) so a dead connection is noticed here and
            # replaced, instead of failing the batch.
            self._run(0)
            if self._ready and self._conn.is_open and self._channel.is_open:
                return
            logger.info("RabbitMQ connection lost while idle (%s); reconnecting", self._error)
            self._discard()
            self._node = (self._node + 1) % len(self._nodes)  # the lost node is tried last
        reasons = []
        for _ in range(len(self._nodes)):
            params = self._nodes[self._node]
            reason = self._connect(params)
            if reason is None:
                if reasons:
                    logger.info(
                        "Connected to RabbitMQ node %s:%s after %d failed", params.host, params.port, len(reasons)
                    )
                return
            reasons.append(f"{params.host}:{params.port}: {reason}")
            self._node = (self._node + 1) % len(self._nodes)
        raise BrokerUnavailable(f"cannot connect to RabbitMQ: {'; '.join(reasons)}")

    def _connect(self, params: pika.URLParameters) -> str | None:
        """Open a confirm-mode channel on one node; None on success, else why not."""
        self._error, self._ready = None, False
        self._declared, self._next_tag, self._floor = set(), 1, 1
        self._conn = SelectConnection(
            params,
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._on_channel_open),
            on_open_error_callback=self._on_connection_closed,
            on_close_callback=self._on_connection_closed,
        )
        if not (self._run(CONNECT_TIMEOUT) and self._ready):
            reason = self._error or "timed out"
            self._discard()
            return reason
        return None

    def _declare_new_queues(self, names: set[str]) -> None:
        if self._declare_queue is None:
            return
        for name in sorted(names - self._declared):
            try:
                self._declare_queue(name)
            except (pika.exceptions.AMQPError, dramatiq.errors.ConnectionError, OSError) as exc:
                raise BrokerUnavailable(f"cannot declare queue {name!r}: {exc!r}") from exc
            self._declared.add(name)

    def _run(self, timeout: float) -> bool:
        """Run the ioloop until a callback stops it; False if `timeout` hit first."""
        ioloop, expired = self._conn.ioloop, []
        timer = ioloop.call_later(timeout, lambda: (expired.append(True), ioloop.stop()))
        try:
            ioloop.start()
        finally:
            ioloop.remove_timeout(timer)
        return not expired

    def _discard(self) -> None:
        """Close the connection (politely, but without waiting long) and forget it."""
        conn, self._ready = self._conn, False
        if conn is None:
            return
        if not conn.is_closed:
            try:
                conn.close()
            except pika.exceptions.ConnectionWrongStateError:
                pass  # already closing
            self._run_until_closed(conn)
        if not conn.is_closed:
            # A hung broker never answers Connection.Close; drop the socket
            # ourselves rather than leak it (pika has no public abort).
            conn._adapter_disconnect_stream()
            self._run_until_closed(conn)
        conn.ioloop.close()
        self._conn = self._channel = None

    def _run_until_closed(self, conn: SelectConnection) -> None:
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while not conn.is_closed and time.monotonic() < deadline:
            self._run(max(0.0, deadline - time.monotonic()))  # channel close stops it early

    # -- pika callbacks (run inside the ioloop) ----------------------------

    def _on_channel_open(self, channel) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(self._on_confirm, callback=self._on_confirm_selected)

    def _on_confirm_selected(self, _frame) -> None:
        self._ready = True
        self._conn.ioloop.stop()

    def _on_connection_closed(self, conn, reason) -> None:
        self._error = f"connection closed: {reason!r}"
        conn.ioloop.stop()

    def _on_channel_closed(self, _channel, reason) -> None:
        self._error = f"channel closed: {reason!r}"
        self._ready = False
        self._conn.ioloop.stop()

    def _on_return(self, _channel, method, properties, _body) -> None:
        # Arrives before the ack of the same message, so recording is enough.
        self._rejected.append(f"{properties.message_id} returned ({method.reply_text})")
        self._rejected_ids.add(properties.message_id)

    def _on_confirm(self, frame) -> None:
        method = frame.method
        nack = isinstance(method, pika.spec.Basic.Nack)
        tag = method.delivery_tag
        tags = range(self._floor, tag + 1) if method.multiple else (tag,)
        for t in tags:
            message_id = self._pending.pop(t, None)
            if nack and message_id is not None:
                self._rejected.append(f"{message_id} nacked")
                self._rejected_ids.add(message_id)
        if method.multiple:
            self._floor = max(self._floor, tag + 1)
        if not self._pending:
            self._conn.ioloop.stop()
