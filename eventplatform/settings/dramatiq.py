"""Dramatiq broker and middleware settings (read by django_dramatiq)."""

from __future__ import annotations

from eventplatform.settings.base import env

BROKER_URL = env.str("BROKER_URL", default="")
EMBEDDED_BROKER = not BROKER_URL

DRAMATIQ_MIDDLEWARE = [
    "dramatiq.middleware.AgeLimit",
    "dramatiq.middleware.TimeLimit",
    "dramatiq.middleware.Callbacks",
    "dramatiq.middleware.Pipelines",
    "dramatiq.middleware.Retries",
    "dramatiq.middleware.CurrentMessage",
    "django_dramatiq.middleware.DbConnectionsMiddleware",
    "eventplatform.logging.CorrelationMiddleware",
]

if EMBEDDED_BROKER:
    DRAMATIQ_BROKER = {"BROKER": "dramatiq.brokers.stub.StubBroker", "OPTIONS": {}, "MIDDLEWARE": DRAMATIQ_MIDDLEWARE}
else:
    DRAMATIQ_BROKER = {
        "BROKER": "dramatiq.brokers.rabbitmq.RabbitmqBroker",
        # Workers confirm nothing themselves: every message they enqueue goes through the outbox.
        "OPTIONS": {"url": BROKER_URL, "confirm_delivery": True},
        "MIDDLEWARE": DRAMATIQ_MIDDLEWARE,
    }

DRAMATIQ_TASKS_DATABASE = "default"
DRAMATIQ_AUTODISCOVER_MODULES = ["tasks"]
