"""Prometheus exposition for every process kind (multiprocess-aware)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pika
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY

from eventplatform.broker import connect_blocking, split_broker_urls


def metrics_registry() -> CollectorRegistry:
    """The registry to expose: the aggregate of all process files in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def start_metrics_server(port: int, addr: str = "127.0.0.1", extra_collectors: tuple[object, ...] = ()) -> None:
    registry = metrics_registry()
    for collector in extra_collectors:
        registry.register(collector)  # type: ignore[arg-type]
    start_http_server(port, addr=addr, registry=registry)


class RabbitmqQueueCollector:
    """Queue depth and consumers of every queue the system uses, read from the broker itself.

    Passive `queue_declare` (AMQP, no management plugin needed) on the main, delay (.DQ) and
    dead-letter (.XQ) queues. Results are cached for `ttl` seconds so frequent scrapes cost the
    broker nothing; it runs in the exporter's thread, never on a request or publish path.
    """

    def __init__(self, urls: str | list[str], queues: list[str], ttl: float = 15.0, timeout: float = 3.0) -> None:
        # A BROKER_URL string (one node or several) or the list settings.BROKER_URLS.
        self.urls = split_broker_urls(urls) if isinstance(urls, str) else urls
        self.ttl, self.timeout = ttl, timeout
        self.queues = [name for queue in queues for name in (queue, f"{queue}.DQ", f"{queue}.XQ")]
        self._cache: tuple[float, dict[str, tuple[int, int]], bool] | None = None
        self._lock = threading.Lock()

    def _read(self) -> tuple[dict[str, tuple[int, int]], bool]:
        depths: dict[str, tuple[int, int]] = {}
        try:
            connection = connect_blocking(self.urls, timeout=self.timeout)  # any node of the cluster
        except Exception:  # noqa: BLE001 - the broker being down is exactly what this reports
            return depths, False
        try:
            for queue in self.queues:
                try:
                    channel = connection.channel()
                    frame = channel.queue_declare(queue=queue, passive=True)
                    depths[queue] = (frame.method.message_count, frame.method.consumer_count)
                    channel.close()
                except pika.exceptions.ChannelClosedByBroker:
                    continue  # not declared yet: nothing has used it
        except Exception:  # noqa: BLE001
            return depths, False
        finally:
            try:
                connection.close()
            except Exception:  # noqa: BLE001
                pass
        return depths, True

    def describe(self) -> list[GaugeMetricFamily]:
        """Names only, so registering the collector does not query the broker (nor fill the cache)."""
        return [
            GaugeMetricFamily(name, "", labels=labels)
            for name, labels in (
                ("eventplatform_rabbitmq_queue_messages", ["queue"]),
                ("eventplatform_rabbitmq_queue_consumers", ["queue"]),
                ("eventplatform_rabbitmq_up", None),
            )
        ]

    def snapshot(self) -> tuple[dict[str, tuple[int, int]], bool]:
        """({queue: (messages, consumers)}, broker answered), at most `ttl` seconds old; the status
        page reads it too. Queues never declared are absent."""
        with self._lock:
            if self._cache is None or time.monotonic() - self._cache[0] > self.ttl:
                depths, up = self._read()
                self._cache = (time.monotonic(), depths, up)
            _, depths, up = self._cache
        return depths, up

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depths, up = self.snapshot()
        messages = GaugeMetricFamily(
            "eventplatform_rabbitmq_queue_messages", "Messages ready in the queue.", labels=["queue"]
        )
        consumers = GaugeMetricFamily(
            "eventplatform_rabbitmq_queue_consumers", "Consumers of the queue.", labels=["queue"]
        )
        for queue, (count, consumer_count) in sorted(depths.items()):
            messages.add_metric([queue], count)
            consumers.add_metric([queue], consumer_count)
        yield messages
        yield consumers
        yield GaugeMetricFamily(
            "eventplatform_rabbitmq_up", "1 when the broker answered the last check.", value=1 if up else 0
        )
