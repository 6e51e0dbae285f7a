"""What every channel's providers share: the message handed to them and the one method they have.

A provider is `send(message) -> provider message id`. It describes what it saw (protocol, stage,
reply code, detail), looks it up in its channel's rows of the failure classification
(apps/notifications/classification.py) and raises the exception the row gives. The providers
themselves live in their channel's package (apps/notifications/channels/<name>/), built by the
channel registry (apps/notifications/channels/__init__.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Protocol


@dataclass(frozen=True)
class OutgoingMessage:
    notification_id: str
    recipient: str
    subject: str
    text: str
    html: str | None = None


class Provider(Protocol):
    name: str  # the name of its circuit breaker and of the attempts it records
    channel: str

    def send(self, message: OutgoingMessage) -> str: ...


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (delay-seconds, or an HTTP date) as seconds from now; None without one."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
