"""Reminder wording says "today" or "tomorrow" truthfully: in the event's timezone, relative to the
send time, in both shipped languages (issue 17 item 8)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.utils import timezone

from apps.notifications.models import Notification
from apps.notifications.rendering import render
from apps.notifications.services import notification_send
from apps.registrations.models import Registration
from apps.registrations.reminders import reminders_create
from tests.support.smtp import SmtpServer

UTC = dt.UTC


def context(starts_at: str, locale: str = "en", tz: str = "Europe/Berlin") -> dict[str, str]:
    return {
        "first_name": "Ada",
        "role": "attendee",
        "locale": locale,
        "event_name": "PyData Berlin",
        "event_starts_at": starts_at,
        "event_timezone": tz,
        "event_venue": "bcc",
    }


# (event start, send time, en word, de word); Berlin is UTC+1 in December
CASES = [
    # later the same day: the reminder (sent under 24 h before) must not say "tomorrow"
    ("2026-12-03T19:00:00+00:00", dt.datetime(2026, 12, 3, 6, 0, tzinfo=UTC), "today", "heute"),
    ("2026-12-04T08:00:00+00:00", dt.datetime(2026, 12, 3, 9, 0, tzinfo=UTC), "tomorrow", "morgen"),
    # 00:30 on the 4th in Berlin is still the 3rd in UTC: the event's own calendar counts
    ("2026-12-03T23:30:00+00:00", dt.datetime(2026, 12, 3, 12, 0, tzinfo=UTC), "tomorrow", "morgen"),
    # 23:30 on the 3rd in Berlin, sent at 00:10 Berlin the same (local) day though the 2nd in UTC
    ("2026-12-03T22:30:00+00:00", dt.datetime(2026, 12, 2, 23, 10, tzinfo=UTC), "today", "heute"),
]


@pytest.mark.parametrize(("starts_at", "now", "en", "de"), CASES)
def test_reminder_24h_says_today_or_tomorrow_in_the_event_timezone(
    starts_at: str, now: dt.datetime, en: str, de: str
) -> None:
    english = render(kind="reminder_24h", channel="email", context=context(starts_at), now=now)
    assert english.subject == f"Reminder: PyData Berlin starts {en}"
    assert f"this event starts {en}." in english.text and f"starts {en}." in english.html
    german = render(kind="reminder_24h", channel="email", context=context(starts_at, "de"), now=now)
    assert german.subject == f"Erinnerung: PyData Berlin beginnt {de}"
    assert f"beginnt {de}." in german.text and f"beginnt {de}." in german.html
    assert ("tomorrow" in english.text) == (en == "tomorrow") and ("morgen" in german.text) == (de == "morgen")


def test_a_reminder_further_away_names_its_day() -> None:
    """Not reachable by the 24 h window, but a delayed or replayed one must not lie either."""
    rendered = render(
        kind="reminder_24h",
        channel="email",
        context=context("2026-12-06T08:00:00+00:00"),
        now=dt.datetime(2026, 12, 3, 9, 0, tzinfo=UTC),
    )
    assert rendered.subject == "Reminder: PyData Berlin starts on Sunday, 6 December"


def _zone_where_it_is_about_noon(now: dt.datetime) -> str:
    """An Etc/GMT zone whose local time is 11:00-13:00 now, so now + 2 h is the same local day and
    now + 20 h the next, whatever time the test runs (Etc/GMT-N is UTC+N)."""
    offset = max(-12, min(14, 12 - now.hour))
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"


@pytest.mark.django_db
@pytest.mark.parametrize(("hours_ahead", "word"), [(2, "today"), (20, "tomorrow")])
def test_sent_reminders_arrive_saying_today_or_tomorrow(
    email_via_smtp: SmtpServer, make_registration: Callable[..., Registration], hours_ahead: int, word: str
) -> None:
    now = timezone.now()
    zone = _zone_where_it_is_about_noon(now)
    registration = make_registration(
        event_starts_at=now + dt.timedelta(hours=hours_ahead), event_timezone=zone, phone=""
    )
    reminders_create(now=now)
    reminder = Notification.objects.get(registration=registration, kind="reminder_24h")
    assert notification_send(notification_id=str(reminder.id)).outcome == "sent"
    [message] = email_via_smtp.messages
    assert message["Subject"] == f"Reminder: PyData Berlin starts {word}"
