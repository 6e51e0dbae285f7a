"""How fast does ConfirmingPublisher push confirmed, persistent messages into RabbitMQ?

Publishes 20,000 1 KB messages in batches of 500 to a throw-away vhost on the local
broker (queue declared by dramatiq, as in production) and prints messages per second.
`--blocking` also measures pika's BlockingConnection with confirms, for comparison.

    .venv/bin/python bench/publisher_rate.py [--blocking]
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pika
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from apps.outbox.publisher import ConfirmingPublisher, OutgoingMessage

TOTAL, BATCH, SIZE = 20_000, 500, 1024


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True)


def main() -> None:
    vhost = f"bench_publisher_{uuid.uuid4().hex[:8]}"
    url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        broker = RabbitmqBroker(url=url, middleware=[])
        broker.declare_queue("bench", ensure=True)
        body = b'{"pad":"' + b"x" * (SIZE - 10) + b'"}'
        messages = [OutgoingMessage("bench", body, uuid.uuid4().hex) for _ in range(TOTAL)]

        publisher = ConfirmingPublisher(url)
        publisher.publish_batch(messages[:1])  # connect outside the timed part
        started = time.perf_counter()
        for i in range(0, TOTAL, BATCH):
            publisher.publish_batch(messages[i : i + BATCH])
        elapsed = time.perf_counter() - started
        publisher.close()
        print(f"ConfirmingPublisher: {TOTAL} x {SIZE} B in batches of {BATCH}: {TOTAL / elapsed:,.0f} msgs/s")

        if "--blocking" in sys.argv:
            conn = pika.BlockingConnection(pika.URLParameters(url))
            channel = conn.channel()
            channel.confirm_delivery()
            props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
            n = 2_000
            started = time.perf_counter()
            for _ in range(n):
                channel.basic_publish("", "bench", body, props, mandatory=True)
            elapsed = time.perf_counter() - started
            conn.close()
            print(f"BlockingConnection (one confirm at a time): {n / elapsed:,.0f} msgs/s")
        broker.close()
    finally:
        rabbitmqctl("delete_vhost", vhost)


if __name__ == "__main__":
    main()
