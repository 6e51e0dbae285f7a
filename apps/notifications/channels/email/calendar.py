"""The calendar entry an e-mail carries (CONTRACT section 9; RFC 5545 and iTIP, RFC 5546), built
with the `icalendar` library.

Confirmations and updates carry `METHOD:REQUEST`, the cancellation `METHOD:CANCEL` with
`STATUS:CANCELLED`; all three one `VEVENT` with the same `UID`, so the attendee's calendar keeps
one entry that moves with the event and goes when the registration is cancelled. What the entry
needs comes from the notification's context, written when the notification was created
(apps.registrations): `calendar_uid` (stable for the registration), `calendar_sequence` (grows
with every visible change; the cancellation's is one more than the last update's), the portal's
sender (`sender_email_from`, the ORGANIZER) and the event. A replay re-sends the very same entry.

Choices (docs/organisers.md, "Calendar entry"):
- DTSTART and DTEND are written in UTC: the instant is exact, every client shows it in the
  attendee's own zone, and no VTIMEZONE block (kilobytes, valid for a range of years) is needed.
  The e-mail's text names the event's timezone.
- DTEND is DTSTART + CALENDAR_EVENT_MINUTES (default 60): webhooks carry no end time.
- The UID's domain is DEFAULT_FROM_EMAIL's (the platform's), not the portal's sender: a portal that
  changes its sender between the confirmation and an update must not create a second entry.
- RSVP is off: we do not process replies to the invitation.
A notification created before the calendar existed (no `calendar_uid` in its context) has none.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

import icalendar
from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

PRODID = "-//eventplatform//notifications//EN"
# The notification kinds whose e-mail carries an entry, and the iTIP method of each.
METHODS = {"confirmation": "REQUEST", "update": "REQUEST", "cancellation": "CANCEL"}


@dataclass(frozen=True)
class CalendarPart:
    method: str  # REQUEST or CANCEL: the MIME part's `method` parameter, as in the calendar
    text: str  # the iCalendar object, CRLF line ends


@functools.cache
def _uid_domain(default_from: str) -> str:
    return parseaddr(default_from)[1].rpartition("@")[2].lower() or "eventplatform.local"


# A parameter value cannot hold a DQUOTE or a control character (RFC 5545 3.1); names are the
# attendee's own text.
_NOT_IN_PARAMETER = re.compile(r'[\x00-\x1f\x7f"]+')


def _address(value: str, name: str = "") -> icalendar.vCalAddress:
    display, address = parseaddr(value)
    entry = icalendar.vCalAddress(f"mailto:{address}")
    name = _NOT_IN_PARAMETER.sub(" ", name or display).strip()
    if name:
        entry.params["cn"] = name
    return entry


def calendar_part(*, kind: str, context: Mapping[str, Any], sender: str, recipient: str) -> CalendarPart | None:
    """The entry for this notification's e-mail, or None when its kind carries none or its context
    lacks what one needs (no UID: created before the calendar existed; no start time)."""
    method = METHODS.get(kind)
    starts_at = parse_datetime(str(context.get("event_starts_at") or ""))
    uid = context.get("calendar_uid")
    if method is None or not uid or starts_at is None:
        return None
    if timezone.is_naive(starts_at):  # the intake stores an offset; an old row may lack one
        starts_at = starts_at.replace(tzinfo=dt.UTC)
    starts_at = starts_at.astimezone(dt.UTC)

    event = icalendar.Event()
    event.add("uid", f"{uid}@{_uid_domain(settings.DEFAULT_FROM_EMAIL)}")
    event.add("sequence", int(context.get("calendar_sequence") or 0))
    event.add("dtstamp", timezone.now().astimezone(dt.UTC).replace(microsecond=0))
    event.add("dtstart", starts_at)
    event.add("dtend", starts_at + dt.timedelta(minutes=settings.CALENDAR_EVENT_MINUTES))
    event.add("summary", str(context.get("event_name") or ""))
    if context.get("event_venue"):
        event.add("location", str(context["event_venue"]))
    event.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    event.add("organizer", _address(sender))
    attendee = _address(recipient, " ".join(str(context.get(k) or "") for k in ("first_name", "last_name")).strip())
    attendee.params.update({"role": "REQ-PARTICIPANT", "partstat": "NEEDS-ACTION", "rsvp": "FALSE"})
    event.add("attendee", attendee)

    calendar = icalendar.Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", method)
    calendar.add_component(event)
    return CalendarPart(method=method, text=calendar.to_ical().decode("utf-8"))
