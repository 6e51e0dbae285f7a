"""The one write a webhook event allows after it was stored: redaction (migration 0003).

Used by retention (raw bodies and payloads of applied events past their time) and by an erasure
request (one person's data). The event row stays, with its id, portal, delivery id, type, status
and time, so duplicates are still recognised and the registration's history still points at it;
what the portal sent is gone. Nothing else may update an event: the trigger checks the shape of
the update, and on PostgreSQL that this transaction asked for a redaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

from apps.webhooks.models import WebhookEvent


@dataclass(frozen=True)
class Redaction:
    event_id: uuid.UUID
    payload: dict[str, Any]  # must carry a "redacted" key (the trigger checks it)
    errors: dict[str, Any] | None = None  # None: errors untouched; else they must carry a "redacted" key


def redacted_payload(payload: Any, *, reason: str, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """What of a payload is kept: its type, timestamp, registration id and event (no attendee).

    `drop`: strings (an e-mail, a phone) that must not survive; if one still appears in the kept
    part (a portal put it somewhere unexpected), only the marker is kept.
    """
    kept: dict[str, Any] = {"redacted": reason}
    if isinstance(payload, dict):
        for key in ("type", "timestamp"):
            if isinstance(payload.get(key), str):
                kept[key] = payload[key]
        data = payload.get("data")
        if isinstance(data, dict):
            kept_data = {key: data[key] for key in ("registration_id",) if isinstance(data.get(key), str)}
            if isinstance(data.get("event"), dict):
                kept_data["event"] = data["event"]
            kept["data"] = kept_data
    text = str(kept).lower()
    if any(value and value.lower() in text for value in drop):
        return {"redacted": reason}
    return kept


@transaction.atomic
def webhook_events_redact(*, redactions: list[Redaction]) -> int:
    """Empty the raw body of each event and replace its payload (and errors when asked).

    One transaction: the PostgreSQL flag is transaction-local (`set_config(..., true)`), so it
    cannot leak into a later transaction on this pooled connection. If the process dies here,
    nothing was redacted and the caller's next run does it again.
    """
    if not redactions:
        return 0
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('eventplatform.redaction', 'on', true)")
    events: list[WebhookEvent] = []
    with_errors: list[WebhookEvent] = []
    for redaction in redactions:
        event = WebhookEvent(id=redaction.event_id, raw_body=b"", payload=redaction.payload, errors=redaction.errors)
        (events if redaction.errors is None else with_errors).append(event)
    updated = 0
    if events:
        updated += WebhookEvent.objects.bulk_update(events, ["raw_body", "payload"], batch_size=500)
    if with_errors:
        updated += WebhookEvent.objects.bulk_update(with_errors, ["raw_body", "payload", "errors"], batch_size=500)
    return updated
