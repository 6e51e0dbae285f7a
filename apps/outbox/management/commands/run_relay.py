from __future__ import annotations

import signal
import threading
from typing import Any

import dramatiq
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.outbox.relay import BrokerEnqueuePublisher, Relay
from eventplatform.broker import pipeline_queues
from eventplatform.observability import RabbitmqQueueCollector, start_metrics_server


def build_publisher():
    """Batched publisher confirms against RabbitMQ; the in-process broker's enqueue when embedded."""
    broker = dramatiq.get_broker()
    if settings.EMBEDDED_BROKER:
        return BrokerEnqueuePublisher(broker)
    from apps.outbox.publisher import BrokerUnavailable, ConfirmingPublisher

    def declare(queue_name: str) -> None:
        try:
            broker.declare_queue(queue_name, ensure=True)
        except Exception as error:  # any failure here means the broker is not usable
            raise BrokerUnavailable(f"Could not declare queue {queue_name}: {error}") from error

    # Every node of the cluster, tried in turn; queues declared through the workers' own broker, so
    # the relay and the workers agree on their type and arguments (BROKER_QUEUE_TYPE).
    return ConfirmingPublisher(settings.BROKER_URLS, declare_queue=declare)


class Command(BaseCommand):
    help = "Publish outbox rows to the broker (run one or more; they never publish a row twice at once)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--batch-size", type=int, default=settings.RELAY_BATCH_SIZE, help="Rows claimed and confirmed per batch."
        )
        parser.add_argument(
            "--poll-seconds",
            type=float,
            default=settings.RELAY_POLL_SECONDS,
            help="Fallback poll interval when no NOTIFY arrives.",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=settings.RELAY_METRICS_PORT,
            help="Prometheus exporter port (0 disables it).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.EMBEDDED_BROKER:
            raise CommandError("run_relay needs BROKER_URL; with the embedded broker use `manage.py run_pipeline`.")
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        if options["metrics_port"]:
            start_metrics_server(
                options["metrics_port"],
                extra_collectors=(RabbitmqQueueCollector(settings.BROKER_URLS, queues=pipeline_queues()),),
            )
        Relay(
            publisher=build_publisher(),
            batch_size=options["batch_size"],
            poll_seconds=options["poll_seconds"],
            coalesce_seconds=settings.RELAY_COALESCE_SECONDS,
            stop=stop,
        ).run()
