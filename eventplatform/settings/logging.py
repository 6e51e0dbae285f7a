"""Logging: every process writes JSON lines through structlog's formatter, Django's and
Dramatiq's own loggers included (see eventplatform.logging)."""

from __future__ import annotations

from eventplatform.logging import log_format, log_level

LOG_FORMAT = log_format()
LOG_LEVEL = log_level()

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "structured": {
            "()": "eventplatform.logging.build_formatter",
            "log_format": LOG_FORMAT,
        },
    },
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "structured"},
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "pika": {"level": "ERROR"},  # connection noise; the relay and workers log outages themselves
        "dramatiq": {"level": LOG_LEVEL},
    },
}
