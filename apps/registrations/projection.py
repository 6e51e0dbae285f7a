"""Pure functions deriving a registration's state and its notifications from its event log.

Both depend only on the *set* of events, never on arrival order: events are folded in the
portal's timestamp order (ties broken deterministically), so duplicates and reordered deliveries
end in the same state and the same notifications as the clean sequence.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eventplatform.addresses import normalise_email, normalise_phone

TYPE_RANK = {"created": 0, "updated": 1, "cancelled": 2}
# What the attendee sees: a change here (and only here) is worth an `update` message.
VISIBLE_FIELDS = ("first_name", "last_name", "event_name", "event_starts_at", "event_venue")
# The key of a notification's context holding its calendar entry's SEQUENCE (desired_notifications).
CALENDAR_SEQUENCE = "calendar_sequence"
DATA_FIELDS = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "role",
    "locale",
    "event_external_id",
    "event_name",
    "event_starts_at",
    "event_timezone",
    "event_venue",
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
            event_external_id=event["id"],
            event_name=event["name"],
            event_starts_at=event["starts_at"],
            event_timezone=event["timezone"],
            event_venue=event.get("venue") or "",
        )
    if attendee:
        flat.update(
            email=normalise_email(attendee["email"]),
            phone=normalise_phone(attendee.get("phone")),
            first_name=attendee["first_name"],
            last_name=attendee.get("last_name") or "",
            role=attendee["role"],
            locale=attendee.get("locale") or "en",
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


def _visible_value(name: str, value: Any) -> Any:
    """A visible field as compared: the same instant written with another UTC offset (or as an
    event stored before the intake normalised it) is the same start; names without padding."""
    if name == "event_starts_at" and isinstance(value, str) and value:
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
        return parsed.astimezone(dt.UTC).isoformat() if parsed.tzinfo else parsed.isoformat()
    return value.strip() if isinstance(value, str) else value


def visible_digest(state: dict[str, Any]) -> str:
    visible = {name: _visible_value(name, state.get(name)) for name in VISIBLE_FIELDS}
    return hashlib.sha256(json.dumps(visible, sort_keys=True).encode()).hexdigest()[:16]


def event_key(event: DomainEvent) -> str:
    """Names one event among its registration's (its place in the portal's order and its content):
    the dedupe key of the update it caused."""
    return "event:" + hashlib.sha256(json.dumps(event.sort_key()).encode()).hexdigest()[:16]


def desired_notifications(events: Iterable[DomainEvent]) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, dedupe_key, state) triples the log calls for; each (kind, key) is delivered once.

    `state` is the registration as it stood right after the event that called for the
    notification, in the portal's order: its recipient and wording do not depend on which later
    events happened to arrive first.

    An update is keyed by the event that caused it, not by what it says: Alpha -> Bravo -> Alpha ->
    Bravo is three updates (a digest of the content would find "Bravo" sent already and lose the
    last one). Only the last event (in the portal's order) that changed what the attendee sees
    while the registration was active calls for one, so the last update always states the final
    state: an older update delivered after a newer one changes nothing, and an update of a
    registration cancelled since is not wanted (the cancellation is the last word). That the
    attendee was told this state already (the same content, e.g. back and forth before the first
    was sent) is the caller's knowledge: registrations.services drops such an update.

    Each state also carries CALENDAR_SEQUENCE, the SEQUENCE of the calendar entry its e-mail
    carries: 0 for the confirmation, the number of visible changes (in the portal's order) up to
    the update's event, one more than all of them before the cancellation. Stored with the
    notification, so a replay re-sends the same entry, and derived from the log alone, so it
    grows with every update whatever order the deliveries arrived in.
    """
    wanted: dict[tuple[str, str], dict[str, Any]] = {}
    state: dict[str, Any] | None = None
    last_change: tuple[str, dict[str, Any]] | None = None
    changes = 0  # visible changes so far: the calendar entry's SEQUENCE (CONTRACT section 9)
    for event in ordered(events):
        before, state = state, apply(state, event)
        if event.type == "created":
            wanted.setdefault(("confirmation", ""), {**state, CALENDAR_SEQUENCE: changes})
        elif event.type == "cancelled":
            wanted.setdefault(("cancellation", ""), {**state, CALENDAR_SEQUENCE: changes + 1})
        elif before is not None and before["status"] == "active" and visible_digest(before) != visible_digest(state):
            changes += 1
            last_change = (event_key(event), {**state, CALENDAR_SEQUENCE: changes})
    if last_change is not None and state is not None and state["status"] == "active":
        wanted[("update", last_change[0])] = last_change[1]
    return [(kind, dedupe_key, state) for (kind, dedupe_key), state in wanted.items()]
