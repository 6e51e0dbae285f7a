"""Dramatiq broker and middleware settings (read by django_dramatiq)."""

from __future__ import annotations

import os
import sys
import tempfile

from eventplatform.broker import split_broker_urls
from eventplatform.settings.base import env

# One node, or several nodes of one cluster separated by commas, semicolons or spaces: every
# process fails over between them (eventplatform/broker.py).
BROKER_URL = env.str("BROKER_URL", default="")
BROKER_URLS = split_broker_urls(BROKER_URL)
EMBEDDED_BROKER = not BROKER_URLS
# `quorum`: every queue (and its .DQ and .XQ) is a replicated quorum queue; `classic` (default)
# keeps single-node classic queues. A queue's type cannot change once declared.
BROKER_QUEUE_TYPE = env.str("BROKER_QUEUE_TYPE", default="classic")
# Quorum queues only: deliveries of one message before it is dead-lettered to .XQ (poison message).
BROKER_QUORUM_DELIVERY_LIMIT = env.int("BROKER_QUORUM_DELIVERY_LIMIT", default=20)
# Seconds a worker's publishing connection may stay blocked by a RabbitMQ memory/disk alarm before
# pika closes it and the publish fails (instead of hanging the thread for the alarm's duration).
BROKER_BLOCKED_CONNECTION_TIMEOUT = env.float("BROKER_BLOCKED_CONNECTION_TIMEOUT", default=30.0)
# AMQP heartbeat in seconds (a silently dead node is noticed after about two of them).
BROKER_HEARTBEAT = env.int("BROKER_HEARTBEAT", default=60)
# Deliveries of one message before a worker dead-letters it to .XQ instead of running it (a message
# that kills its worker process would otherwise loop forever on classic queues; apps/outbox/poison.py).
BROKER_MAX_DELIVERIES = env.int("BROKER_MAX_DELIVERIES", default=5)

DRAMATIQ_MIDDLEWARE = [
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.Callbacks",
    "dramatiq.middleware.Pipelines",
    "dramatiq.middleware.Retries",
    "dramatiq.middleware.CurrentMessage",
    "django_dramatiq.middleware.DbConnectionsMiddleware",
    # Right after the connection check (it uses the database), before the rest runs any of it.
    "apps.outbox.poison.PoisonMessageGuard",
    "eventplatform.logging.CorrelationMiddleware",
]

if EMBEDDED_BROKER:
    DRAMATIQ_BROKER = {"BROKER": "dramatiq.brokers.stub.StubBroker", "OPTIONS": {}, "MIDDLEWARE": DRAMATIQ_MIDDLEWARE}
else:
    DRAMATIQ_BROKER = {
        "BROKER": "eventplatform.broker.ClusterRabbitmqBroker",
        # Workers confirm nothing themselves: every message they enqueue goes through the outbox.
        "OPTIONS": {
            "url": BROKER_URLS,
            "confirm_delivery": True,
            "queue_type": BROKER_QUEUE_TYPE,
            "delivery_limit": BROKER_QUORUM_DELIVERY_LIMIT,
            "blocked_connection_timeout": BROKER_BLOCKED_CONNECTION_TIMEOUT,
            "heartbeat": BROKER_HEARTBEAT,
        },
        "MIDDLEWARE": DRAMATIQ_MIDDLEWARE,
    }

DRAMATIQ_TASKS_DATABASE = "default"
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]
# django_dramatiq always offers its own tasks module: one actor for its Task model, which we do not use.
DRAMATIQ_IGNORED_MODULES = ["django_dramatiq.tasks"]

# Worker metrics: Dramatiq's Prometheus middleware serves, on dramatiq_prom_port (default 9191),
# the aggregate of per-process sample files in dramatiq_prom_db. Our own worker metrics must be
# written to the same directory, so it is chosen here, in the `rundramatiq` process, before it
# execs the worker processes and before prometheus_client is first imported by them. A fresh
# directory per start: stale files of dead processes would otherwise be summed in.
# The exec'd worker processes inherit the marker and load these settings again.
if sys.argv[1:2] == ["rundramatiq"] or os.environ.get("EVENTPLATFORM_WORKER"):
    os.environ["EVENTPLATFORM_WORKER"] = "1"
    _metrics_dir = os.environ.get("dramatiq_prom_db") or tempfile.mkdtemp(prefix="eventplatform-worker-metrics-")
    os.environ["dramatiq_prom_db"] = _metrics_dir
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _metrics_dir
    # Dramatiq 2 runs the exporter as a fork of each `dramatiq` main process (no machine-wide file
    # lock any more): one exporter per worker group, on dramatiq_prom_port.
    os.environ.setdefault("dramatiq_prom_host", "127.0.0.1")
    # Dramatiq 2: an optional extra (dramatiq[prometheus]), no longer exported by dramatiq.middleware.
    DRAMATIQ_MIDDLEWARE = ["dramatiq.middleware.prometheus.Prometheus", *DRAMATIQ_MIDDLEWARE]
    DRAMATIQ_BROKER["MIDDLEWARE"] = DRAMATIQ_MIDDLEWARE
