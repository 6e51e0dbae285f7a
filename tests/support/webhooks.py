"""Building correctly (or deliberately wrongly) signed webhook deliveries."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from typing import Any

from standardwebhooks import Webhook

from apps.webhooks.signature import sign

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def payload(
    registration_id: str = "R-1001",
    *,
    event_type: str = "registration.created",
    email: str = "ada@example.org",
    phone: str | None = "+4915112345678",
    role: str = "attendee",
    first_name: str = "Ada",
    event_name: str = "PyData Berlin",
    starts_at: str = "2026-12-03T09:00:00+01:00",
    venue: str | None = "bcc",
    locale: str = "en",
    timestamp: str | None = None,
) -> dict[str, Any]:
    return {
        "type": event_type,
        "timestamp": timestamp or dt.datetime.now(dt.UTC).isoformat(),
        "data": {
            "registration_id": registration_id,
            "event": {
                "id": "EV-7",
                "name": event_name,
                "starts_at": starts_at,
                "timezone": "Europe/Berlin",
                "venue": venue,
            },
            "attendee": {
                "email": email,
                "phone": phone,
                "first_name": first_name,
                "last_name": "Lovelace",
                "role": role,
                "locale": locale,
            },
        },
    }


def signed_headers(
    body: bytes, *, secret: str = SECRET, delivery_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """Signed with the standardwebhooks package's own `sign`, independent of our verifier."""
    delivery_id = delivery_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    try:
        signature = Webhook(secret).sign(delivery_id, dt.datetime.fromtimestamp(timestamp, tz=dt.UTC), body.decode())
    except (UnicodeDecodeError, ValueError, OverflowError, OSError):  # it signs text and datetimes only
        signature = sign(secret=secret, delivery_id=delivery_id, timestamp=timestamp, body=body)
    return {
        "content-type": "application/json",
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()
