"""The calendar entry (CONTRACT section 9, issue 20 item 4): confirmation and update e-mails carry a
`text/calendar; method=REQUEST` part, the cancellation `method=CANCEL`, one VEVENT whose UID stays
and whose SEQUENCE grows. Read where it arrives (the aiosmtpd server), parsed by `icalendar` and by a
second, independent parser (`vobject`), after signed webhooks went through the real processes."""

from __future__ import annotations

import datetime as dt
import email.message
from collections.abc import Iterator
from typing import Any

import icalendar
import pytest
import requests
import vobject
from django.test import override_settings

from apps.notifications.channels.email.calendar import calendar_part
from apps.notifications.models import Notification
from apps.webhooks.services import portal_create
from tests.support.polling import wait_until
from tests.support.smtp import SmtpServer
from tests.support.stack import Stack
from tests.support.webhooks import SECRET, encode, payload, signed_headers

SENDER = "Ada Conf <hello@conf.example.com>"
REPLY_TO = "team@gmail.example"
# The portal's clock for the steps: recent, one minute apart.
START = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)


# --- the entry itself
def context(**overrides: Any) -> dict[str, Any]:
    return {
        "calendar_uid": "5b0e3c4a-0000-5000-8000-000000000001",
        "calendar_sequence": 0,
        "event_name": "PyData Berlin",
        "event_starts_at": "2030-12-03T09:00:00+01:00",
        "event_timezone": "Europe/Berlin",
        "event_venue": "bcc, Alexanderstraße 11",
        "first_name": "Ada",
        "last_name": "Lovelace",
        **overrides,
    }


def test_only_confirmation_update_and_cancellation_carry_an_entry() -> None:
    for kind in ("reminder_24h", "reminder_1h"):
        assert calendar_part(kind=kind, context=context(), sender=SENDER, recipient="ada@example.org") is None
    methods = {
        kind: calendar_part(kind=kind, context=context(), sender=SENDER, recipient="ada@example.org")
        for kind in ("confirmation", "update", "cancellation")
    }
    assert {kind: part.method for kind, part in methods.items() if part} == {
        "confirmation": "REQUEST",
        "update": "REQUEST",
        "cancellation": "CANCEL",
    }


def test_a_notification_created_before_the_calendar_existed_has_no_entry() -> None:
    old = context()
    del old["calendar_uid"]
    assert calendar_part(kind="confirmation", context=old, sender=SENDER, recipient="ada@example.org") is None


def test_attendee_text_cannot_break_the_entry() -> None:
    # Given a name with quotes, a line break and a semicolon, and a venue with commas
    part = calendar_part(
        kind="confirmation",
        context=context(first_name='Ada "the first";\r\nX-INJECTED:1', event_name="A; B, C\nD"),
        sender=SENDER,
        recipient="ada@example.org",
    )
    assert part is not None
    parsed = icalendar.Calendar.from_ical(part.text)
    (event,) = parsed.walk("VEVENT")
    assert str(event["summary"]) == "A; B, C\nD"
    assert "X-INJECTED" not in event and "X-INJECTED" not in parsed
    assert "the first" in event["attendee"].params["cn"]
    assert vobject.readOne(part.text).vevent.summary.value == "A; B, C\nD"


def test_a_start_without_offset_is_taken_as_utc() -> None:
    part = calendar_part(
        kind="update",
        context=context(event_starts_at="2030-12-03T08:00:00"),
        sender=SENDER,
        recipient="ada@example.org",
    )
    assert part is not None
    (event,) = icalendar.Calendar.from_ical(part.text).walk("VEVENT")
    assert event.decoded("dtstart") == dt.datetime(2030, 12, 3, 8, 0, tzinfo=dt.UTC)


# --- end to end: webhooks -> gunicorn -> relay -> worker -> SMTP, four steps of each registration
REGISTRATIONS = [f"R-CAL-{n}" for n in range(1, 7)]
# What each step changes; the venue and the start are what the attendee's calendar must follow.
STEPS = [
    ("registration.created", "bcc", "2030-12-03T09:00:00+01:00"),
    ("registration.updated", "Kosmos, Karl-Marx-Allee 131a", "2030-12-03T09:00:00+01:00"),
    ("registration.updated", "Kosmos, Karl-Marx-Allee 131a", "2030-12-04T14:30:00+01:00"),
    ("registration.cancelled", "Kosmos, Karl-Marx-Allee 131a", "2030-12-04T14:30:00+01:00"),
]
KINDS = ["confirmation", "update", "update", "cancellation"]


@pytest.fixture
def stack(transactional_db, smtp_server: SmtpServer) -> Iterator[Stack]:
    with override_settings(EMAIL_SENDER_DOMAINS=["conf.example.com"]):
        portal_create(slug="pretix", name="Pretix", secret=SECRET, email_from=SENDER, reply_to=REPLY_TO)
    running = Stack(smtp_server)
    yield running
    running.stop()


def post(stack: Stack, registration_id: str, step: int) -> None:
    event_type, venue, starts_at = STEPS[step]
    body = encode(
        payload(
            registration_id,
            event_type=event_type,
            email=f"{registration_id.lower()}@example.org",
            phone=None,
            venue=venue,
            starts_at=starts_at,
            # the portal's order: one minute per step
            timestamp=(START + dt.timedelta(minutes=step)).isoformat(),
        )
    )
    headers = signed_headers(body, delivery_id=f"msg_{registration_id}_{step}")
    response = requests.post(f"{stack.base_url}/webhooks/pretix/", data=body, headers=headers, timeout=10)
    assert response.status_code == 202, response.text


def calendar_of(message: email.message.EmailMessage) -> tuple[str, str]:
    """(the part's method parameter, its text): the third alternative, after text and HTML."""
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html", "text/calendar"]
    part = parts[2]
    return str(part.get_param("method")), part.get_content()


@pytest.mark.slow
def test_the_entry_keeps_its_uid_and_raises_its_sequence_from_confirmation_to_cancellation(
    stack: Stack, smtp_server: SmtpServer
) -> None:
    # Given six registrations, each created, moved to another venue, moved to another day, cancelled,
    # step by step (each step's e-mail out before the next webhook, so no update supersedes another)
    for step in range(len(STEPS)):
        for registration_id in REGISTRATIONS:
            post(stack, registration_id, step)
        expected = len(REGISTRATIONS) * (step + 1)
        try:
            wait_until(lambda n=expected: len(smtp_server.messages) >= n, timeout=60, what=f"{expected} e-mails")
        except TimeoutError:
            raise AssertionError(f"{len(smtp_server.messages)} of {expected} e-mails\n{stack.logs()}") from None

    # Then each attendee got exactly four e-mails, in order, from the portal's sender
    by_recipient: dict[str, list[email.message.EmailMessage]] = {}
    for message in smtp_server.messages:
        by_recipient.setdefault(str(message["To"]), []).append(message)
    assert sorted(by_recipient) == sorted(f"{r.lower()}@example.org" for r in REGISTRATIONS)
    for registration_id in REGISTRATIONS:
        recipient = f"{registration_id.lower()}@example.org"
        messages = by_recipient[recipient]
        kinds = [Notification.objects.get(id=message["X-Eventplatform-Notification-Id"]).kind for message in messages]
        assert kinds == KINDS
        assert {str(m["From"]) for m in messages} == {SENDER}
        assert {str(m["Reply-To"]) for m in messages} == {REPLY_TO}

        uids, sequences = set(), []
        for step, message in enumerate(messages):
            method, text = calendar_of(message)
            _, venue, starts_at = STEPS[step]
            starts = dt.datetime.fromisoformat(starts_at)
            cancelled = step == len(STEPS) - 1
            assert method == ("CANCEL" if cancelled else "REQUEST")

            # read by icalendar
            calendar = icalendar.Calendar.from_ical(text)
            assert str(calendar["method"]) == method
            (event,) = calendar.walk("VEVENT")
            assert event.decoded("dtstart") == starts
            assert event.decoded("dtend") - event.decoded("dtstart") == dt.timedelta(hours=1)
            assert str(event["summary"]) == "PyData Berlin"
            assert str(event["location"]) == venue
            assert str(event["status"]) == ("CANCELLED" if cancelled else "CONFIRMED")
            assert str(event["organizer"]) == "mailto:hello@conf.example.com"
            assert event["organizer"].params["cn"] == "Ada Conf"
            assert str(event["attendee"]) == f"mailto:{recipient}"
            assert event["attendee"].params["cn"] == "Ada Lovelace"

            # read by vobject, which must agree
            other = vobject.readOne(text)
            assert other.method.value == method
            assert other.vevent.uid.value == str(event["uid"])
            assert int(other.vevent.sequence.value) == int(event["sequence"])
            assert other.vevent.dtstart.value == starts
            assert other.vevent.location.value == venue

            uids.add(str(event["uid"]))
            sequences.append(int(event["sequence"]))
            # the link for clients that ignore the part, on the e-mails that add or move the entry
            body = message.get_body(("plain",))
            assert body is not None
            assert ("calendar.google.com/calendar/render?action=TEMPLATE" in body.get_content()) is not cancelled

        assert len(uids) == 1 and uids.pop().endswith("@eventplatform.local")
        assert sequences == [0, 1, 2, 3]

    # And every attendee's entry has a UID of its own
    first_uids = {
        str(icalendar.Calendar.from_ical(calendar_of(m)[1]).walk("VEVENT")[0]["uid"])
        for m in smtp_server.messages
        if Notification.objects.get(id=m["X-Eventplatform-Notification-Id"]).kind == "confirmation"
    }
    assert len(first_uids) == len(REGISTRATIONS)
