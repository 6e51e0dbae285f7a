"""Logging: every process writes JSON lines through structlog's formatter, Django's and
Dramatiq's own loggers included (see eventplatform.logging)."""

from __future__ import annotations

from eventplatform.settings.base import env

_format = env.str("LOG_FORMAT", default="json")
_level = env.str("LOG_LEVEL", default="INFO")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "structured": {
            "()": "eventplatform.logging.build_formatter",
            "log_format": _format,
        },
    },
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "structured"},
    },
    "root": {"handlers": ["stdout"], "level": _level},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "pika": {"level": "ERROR"},  # connection noise; the relay and workers log outages themselves
        "dramatiq": {"level": _level},
    },
}
