"""Pure functions deriving a registration's state and its notifications from its event log.

Both depend only on the *set* of events, never on arrival order: events are folded in the
portal's timestamp order (ties broken deterministically), so duplicates and reordered deliveries
end in the same state and the same notifications as the clean sequence.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eventplatform.addresses import normalise_email, normalise_phone

TYPE_RANK = {"created": 0, "updated": 1, "cancelled": 2}
# What the attendee sees: a change here (and only here) is worth an `update` message.
VISIBLE_FIELDS = ("first_name", "last_name", "event_name", "event_starts_at", "event_venue")
DATA_FIELDS = (
    "email", "phone", "first_name", "last_name", "role", "locale",
    "event_external_id", "event_name", "event_starts_at", "event_timezone", "event_venue",
)


@dataclass(frozen=True)
class DomainEvent:
    type: str
    occurred_at: str  # ISO 8601, as the portal sent it, normalised to UTC
    data: dict[str, Any]

    def sort_key(self) -> tuple[str, int, str]:
        return (self.occurred_at, TYPE_RANK[self.type], json.dumps(self.data, sort_keys=True))


def flatten_payload(data: dict[str, Any]) -> dict[str, Any]:
    """The webhook `data` object as flat registration fields; absent parts are left out.

    The intake stores payloads normalised already; normalising again (idempotent) also makes
    events stored before it did (an address with a trailing CRLF, a phone padded with a
    newline) apply with the value that was validated.
    """
    flat: dict[str, Any] = {}
    event, attendee = data.get("event"), data.get("attendee")
    if event:
        flat.update(
            event_external_id=event["id"], event_name=event["name"], event_starts_at=event["starts_at"],
            event_timezone=event["timezone"], event_venue=event.get("venue") or "",
        )
    if attendee:
        flat.update(
            email=normalise_email(attendee["email"]), phone=normalise_phone(attendee.get("phone")),
            first_name=attendee["first_name"],
            last_name=attendee.get("last_name") or "", role=attendee["role"], locale=attendee.get("locale") or "en",
        )
    return flat


def apply(state: dict[str, Any] | None, event: DomainEvent) -> dict[str, Any]:
    new = dict(state or {"status": "active"})
    new.update(event.data)
    if event.type == "cancelled":
        new["status"] = "cancelled"
    elif event.type == "created":
        new["status"] = "active"
    new["last_event_at"] = event.occurred_at
    return new


def ordered(events: Iterable[DomainEvent]) -> list[DomainEvent]:
    return sorted(events, key=DomainEvent.sort_key)


def fold(events: Iterable[DomainEvent]) -> dict[str, Any] | None:
    state = None
    for event in ordered(events):
        state = apply(state, event)
    return state


def visible_digest(state: dict[str, Any]) -> str:
    visible = {name: state.get(name) for name in VISIBLE_FIELDS}
    return hashlib.sha256(json.dumps(visible, sort_keys=True).encode()).hexdigest()[:16]


def desired_notifications(events: Iterable[DomainEvent]) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, dedupe_key, state) triples the log calls for; each (kind, key) is delivered once.

    `state` is the registration as it stood right after the event that called for the
    notification, in the portal's order: its recipient and wording do not depend on which later
    events happened to arrive first. An update is due only when an event changed what the
    attendee sees while the registration was active; its key is the digest of what they now see,
    so an identical re-send adds nothing.
    """
    wanted: dict[tuple[str, str], dict[str, Any]] = {}
    state: dict[str, Any] | None = None
    for event in ordered(events):
        before, state = state, apply(state, event)
        if event.type == "created":
            key = ("confirmation", "")
        elif event.type == "cancelled":
            key = ("cancellation", "")
        elif before is not None and before["status"] == "active" and visible_digest(before) != visible_digest(state):
            key = ("update", visible_digest(state))
        else:
            continue
        wanted.setdefault(key, state)
    return [(kind, dedupe_key, state) for (kind, dedupe_key), state in wanted.items()]
