"""structlog set-up, personal-data masking and the correlation id that follows one webhook.

The correlation id is the webhook event id. It is bound in a contextvar by the web view, carried
in every outbox message's options, and re-bound by CorrelationMiddleware around each actor run,
so one search for it shows a delivery's whole story.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

import dramatiq
import orjson
import structlog
from dramatiq.middleware import Middleware

_EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+)")
# E.164 as the contract requires it (+ and 7-15 digits), never digits inside ids or uuids.
_PHONE = re.compile(r"(?<![\w+])\+\d{5,13}(\d{2})(?!\w)")


def mask_email(address: str | None) -> str | None:
    """ada@example.org -> a***@example.org: enough to tell recipients apart, not to contact them."""
    if not address:
        return address
    return _EMAIL.sub(r"\1***@\2", address)


def mask_phone(number: str | None) -> str | None:
    """+4915112345678 -> ***78."""
    if not number:
        return number
    return _PHONE.sub(r"***\1", number)


def _mask_personal_data(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: mask any e-mail address or phone number in string values (neither
    can be there without an `@` or a `+`: most values skip both regexes)."""
    for key, value in event_dict.items():
        if isinstance(value, str) and ("@" in value or "+" in value) and key not in ("timestamp", "level", "logger"):
            event_dict[key] = mask_phone(mask_email(value))
    return event_dict


def _orjson_dumps(value: Any, **kwargs: Any) -> str:
    """structlog's JSONRenderer with orjson: a third of the stdlib encoder's time per line. The
    formatter wants text; keys that are not strings (a status code) are written as strings."""
    return orjson.dumps(value, default=kwargs.get("default"), option=orjson.OPT_NON_STR_KEYS).decode()


def _ensure_error_code(_logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Every warning and error carries a stable code; a library's own warnings get a generic one."""
    level = event_dict.get("level", method_name)
    if level in ("warning", "error", "critical", "exception") and "error_code" not in event_dict:
        event_dict["error_code"] = "library_warning"
    return event_dict


SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.StackInfoRenderer(),
    structlog.processors.format_exc_info,
    _mask_personal_data,
    _ensure_error_code,
]


def log_format() -> str:
    """LOG_FORMAT, `json` (the default) or `console`, read here only: by the settings, and by
    gunicorn.conf.py and the Dramatiq command, which log before Django's settings are loaded."""
    return os.environ.get("LOG_FORMAT", "json")


def log_level() -> str:
    """LOG_LEVEL (default INFO), read here only, for the same readers as log_format."""
    return os.environ.get("LOG_LEVEL", "INFO")


def build_formatter(log_format: str = "json") -> logging.Formatter:
    """A stdlib formatter rendering structlog and plain stdlib records alike, one JSON object a line."""
    renderer = (
        structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
        if log_format == "console"
        else structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    )
    return structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *SHARED_PROCESSORS],
    )


structlog.configure(
    processors=[
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.filter_by_level,
        structlog.stdlib.PositionalArgumentsFormatter(),
        *SHARED_PROCESSORS[1:],
        structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
    ],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)


class RequestContextMiddleware:
    """Django middleware: each request starts with empty log context (workers serve many requests)."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        structlog.contextvars.clear_contextvars()
        try:
            return self.get_response(request)
        finally:
            structlog.contextvars.clear_contextvars()


class CorrelationMiddleware(Middleware):
    """Binds the message's correlation id (and notification id, when it has one) for the actor run."""

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.Message) -> None:
        structlog.contextvars.clear_contextvars()
        context = {
            "correlation_id": message.options.get("correlation_id"),
            "message_id": message.message_id,
            "actor": message.actor_name,
        }
        for key in ("event_id", "notification_id"):
            if key in message.kwargs:
                context[key] = message.kwargs[key]
        structlog.contextvars.bind_contextvars(**{k: v for k, v in context.items() if v})

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.Message,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        structlog.contextvars.clear_contextvars()

    after_skip_message = after_process_message
