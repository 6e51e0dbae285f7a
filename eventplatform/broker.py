"""RabbitMQ as a cluster: several node URLs, and quorum queues for every queue Dramatiq uses.

`BROKER_URL` may name several nodes of one cluster (comma, semicolon or whitespace separated).
Every process connects to the first that answers and, when its connection drops, reconnects to
the next that does: the workers through Dramatiq's broker (pika's BlockingConnection takes a list
of parameters and tries them in order), the relay through ConfirmingPublisher (its own rotation),
/readyz and the queue-depth collector through `connect_blocking`.

`BROKER_QUEUE_TYPE=quorum` declares each queue, its delay queue (`.DQ`) and its dead-letter queue
(`.XQ`) as a durable quorum queue, replicated to a majority of the nodes, so a message confirmed to
the relay survives the loss of any one node. Dramatiq has no quorum support of its own; its pull
requests 869 and 871 list the pitfalls, handled here as follows:
- priorities: quorum queues refuse `x-max-priority`, so `max_priority` is rejected at start-up
  (none of our actors uses `broker_priority`);
- delivery limits: a message redelivered more than BROKER_QUORUM_DELIVERY_LIMIT times (a worker
  dying on it, again and again) is dead-lettered to `.XQ` instead of looping forever; never on
  `.DQ`, whose messages a worker holds unacked until due, so every reconnect redelivers them;
- delay queues: held unacked until due, they are subject to RabbitMQ's consumer_timeout on any
  queue type; our backoffs stay under 5 minutes (MAX_BACKOFF_MS below) and longer
  delays go through the outbox, so nothing is held near the 30-minute default;
- a queue's type cannot change once declared (RabbitMQ answers PRECONDITION_FAILED): switching an
  existing installation means draining and deleting its queues first (docs/rabbitmq-cluster.md).
"""

from __future__ import annotations

import importlib
import re
from typing import Any

import dramatiq
import pika
from django.apps import apps
from django.utils.module_loading import module_has_submodule
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL, RabbitmqBroker
from dramatiq.common import dq_name, xq_name

QUEUE_TYPES = ("classic", "quorum")
# The longest any actor's retry backoff may be: Dramatiq holds a delayed message unacknowledged
# until it is due, and RabbitMQ closes a channel holding one past its consumer_timeout (30 minutes
# by default; dramatiq issue 827). Longer waits go through the outbox.
MAX_BACKOFF_MS = 300_000


def split_broker_urls(value: str) -> list[str]:
    """'amqp://a:5672/v, amqp://b:5673/v' -> ['amqp://a:5672/v', 'amqp://b:5673/v']."""
    return [url for url in re.split(r"[\s,;]+", value.strip()) if url]


def pipeline_queues() -> list[str]:
    """The queues our actors are declared with, read from the actors themselves: each app's `tasks`
    module is imported (as `rundramatiq` does; declaring an actor does not connect) and the broker
    names the queues of the actors of our apps (a test's own actors are left out)."""
    for config in apps.get_app_configs():
        if config.name.startswith("apps.") and module_has_submodule(config.module, "tasks"):
            importlib.import_module(f"{config.name}.tasks")
    broker = dramatiq.get_broker()
    actors = (broker.get_actor(name) for name in broker.get_declared_actors())
    return sorted({actor.queue_name for actor in actors if actor.fn.__module__.startswith("apps.")})


def connection_parameters(urls: list[str], *, timeout: float | None = None) -> list[pika.URLParameters]:
    """One pika parameter set per node, each tried once (failing over is trying the next)."""
    parameters = []
    for url in urls:
        params = pika.URLParameters(url)
        params.connection_attempts = 1
        if timeout is not None:
            params.socket_timeout = params.stack_timeout = params.blocked_connection_timeout = timeout
        parameters.append(params)
    return parameters


def connect_blocking(urls: list[str], *, timeout: float) -> pika.BlockingConnection:
    """A BlockingConnection to the first node of `urls` that answers within `timeout` each."""
    return pika.BlockingConnection(connection_parameters(urls, timeout=timeout))


class ClusterRabbitmqBroker(RabbitmqBroker):
    """Dramatiq's RabbitmqBroker with a list of node URLs and an optional queue type."""

    def __init__(
        self,
        *,
        url: str | list[str],
        queue_type: str = "classic",
        delivery_limit: int = 20,
        blocked_connection_timeout: float = 30.0,
        heartbeat: int = 60,
        **options: Any,
    ) -> None:
        if queue_type not in QUEUE_TYPES:
            raise ValueError(f"BROKER_QUEUE_TYPE must be one of {QUEUE_TYPES}, not {queue_type!r}")
        if queue_type == "quorum" and options.get("max_priority"):
            raise ValueError("quorum queues have no x-max-priority: unset max_priority or use classic queues")
        urls = split_broker_urls(url) if isinstance(url, str) else list(url)
        super().__init__(url=urls if len(urls) > 1 else urls[0], **options)
        # During a memory or disk alarm RabbitMQ stops reading from publishing connections: without
        # blocked_connection_timeout a worker thread enqueuing a retry waits in basic_publish for as
        # long as the alarm lasts (hours, silently). With it pika closes the connection and Dramatiq
        # raises ConnectionClosed after its enqueue attempts, so the actor's failure is visible and
        # the message goes back to RabbitMQ (unacked) instead of hanging a thread. The heartbeat
        # detects a dead peer (a node lost without a TCP reset) instead of waiting on the socket.
        for params in self.parameters if isinstance(self.parameters, list) else [self.parameters]:
            params.blocked_connection_timeout = blocked_connection_timeout
            params.heartbeat = heartbeat
        self.queue_type = queue_type
        self.delivery_limit = delivery_limit

    def queue_arguments(self, queue_name: str) -> dict[str, Any]:
        """The arguments the main queue or its delay queue is declared with (the relay's
        publisher declares through this broker, so both always agree)."""
        arguments = self._build_queue_arguments(queue_name)
        if self.queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
            if not queue_name.endswith(".DQ") and self.delivery_limit > 0:
                arguments["x-delivery-limit"] = self.delivery_limit
        return arguments

    def _declare_queue(self, queue_name: str) -> Any:
        return self.channel.queue_declare(queue=queue_name, durable=True, arguments=self.queue_arguments(queue_name))

    def _declare_dq_queue(self, queue_name: str) -> Any:
        return self.channel.queue_declare(
            queue=dq_name(queue_name), durable=True, arguments=self.queue_arguments(dq_name(queue_name))
        )

    def _declare_xq_queue(self, queue_name: str) -> Any:
        if self.queue_type == "classic":
            return super()._declare_xq_queue(queue_name)
        # Quorum queues support per-queue message TTL from RabbitMQ 3.10 on.
        return self.channel.queue_declare(
            queue=xq_name(queue_name),
            durable=True,
            arguments={"x-message-ttl": DEAD_MESSAGE_TTL, "x-queue-type": "quorum"},
        )
