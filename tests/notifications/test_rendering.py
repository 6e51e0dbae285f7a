"""Templates per kind, role and locale; the event's timezone; attendee text that tries to inject."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from email.message import EmailMessage

import pytest
from django.template.defaultfilters import date as django_date
from django.utils import translation

from apps.notifications.models import Notification
from apps.notifications.rendering import render
from apps.notifications.services import notification_send
from apps.notifications.templatetags import event_dates
from tests.notifications.factories import RENDER_CONTEXT
from tests.support.smtp import SmtpServer

KINDS = [kind for kind, _ in Notification.Kind.choices]
CONTEXT = RENDER_CONTEXT


def rendered(kind: str = "confirmation", channel: str = "email", **overrides: str):
    return render(kind=kind, channel=channel, context={**CONTEXT, **overrides})


@pytest.mark.parametrize("locale", ["en", "de"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_has_subject_text_and_html_in_each_locale(kind: str, locale: str) -> None:
    for role in ("attendee", "speaker"):
        email = rendered(kind, locale=locale, role=role)
        assert email.subject != kind and "PyData Berlin" in email.subject
        assert "Ada" in email.text and "PyData Berlin" in email.text and email.html and "Ada" in email.html
    if kind in ("confirmation", "cancellation", "reminder_1h"):  # the kinds sent by SMS as well
        sms = rendered(kind, "sms", locale=locale)
        assert "PyData Berlin" in sms.text and "\n" not in sms.text and len(sms.text) <= 160


def test_times_are_shown_in_the_events_timezone() -> None:
    # 08:00 UTC is 09:00 in Berlin in December
    assert "Thursday, 3 December 2026, 09:00 (Europe/Berlin)" in rendered().text
    assert "at 09:00" not in rendered("reminder_1h", "sms", event_timezone="America/New_York").text
    assert "starts at 03:00" in rendered("reminder_1h", "sms", event_timezone="America/New_York").text


def test_german_wording_with_german_dates() -> None:
    email = rendered(locale="de")
    assert email.subject == "Sie sind angemeldet: PyData Berlin"
    assert "Hallo Ada," in email.text and "Donnerstag, 3. Dezember 2026, 09:00 Uhr" in email.text


def test_a_remembered_start_time_keeps_each_locales_names() -> None:
    for _ in range(2):  # the second round comes from event_dates' memory
        assert "Thursday, 3 December 2026, 09:00" in rendered().text
        assert "Donnerstag, 3. Dezember 2026, 09:00 Uhr" in rendered(locale="de").text
    assert "Friday, 4 December 2026, 09:00" in rendered(event_starts_at="2026-12-04T08:00:00+00:00").text


@pytest.mark.parametrize("language", ["en", "de"])
@pytest.mark.parametrize(
    "value", [dt.datetime(2026, 12, 3, 9, 0), dt.datetime(2027, 5, 1, 23, 59), dt.date(2026, 1, 2), None, ""]
)
@pytest.mark.parametrize("fmt", ["l, j F Y, H:i", "l, j. F Y, H:i", "H:i", None])
def test_event_dates_gives_what_djangos_date_gives(language, value, fmt) -> None:
    def outcome(date_filter):
        try:
            return date_filter(value, fmt)
        except TypeError as error:  # Django's own answer to a time format for a date
            return type(error)

    with translation.override(language):
        assert outcome(event_dates.date) == outcome(event_dates.date) == outcome(django_date)


def test_unknown_locales_and_regional_variants_fall_back() -> None:
    assert rendered(locale="de-AT").subject.startswith("Sie sind angemeldet")
    french = rendered(locale="fr")
    assert french.subject.startswith("You are registered") and "Thursday" in french.text  # not "jeudi"
    assert rendered(locale="../../admin").subject.startswith("You are registered")


def test_speakers_get_speaker_wording() -> None:
    assert rendered(role="speaker").subject == "Speaker confirmation: PyData Berlin"
    assert "thank you for speaking at" in rendered(role="speaker").text
    assert "Vortrag" in rendered("cancellation", locale="de", role="speaker").text
    assert "registration is confirmed" in rendered(role="attendee").text


def test_attendee_text_cannot_break_a_subject_or_add_markup() -> None:
    email = rendered(first_name="<script>alert(1)</script>", event_name="PyData\r\nBcc: evil@example.org\u2028X")
    assert "\n" not in email.subject and "\r" not in email.subject and "\u2028" not in email.subject
    assert "<script>" not in email.html and "&lt;script&gt;" in email.html


@pytest.mark.django_db
def test_crlf_and_html_in_names_add_no_header_and_no_markup_to_the_sent_email(
    email_via_smtp: SmtpServer, make_notification: Callable[..., Notification]
) -> None:
    # Given a registration whose names try header injection and HTML injection
    notification = make_notification(
        first_name="Ada\r\nBcc: evil@example.org",
        last_name="<b>Lovelace</b>",
        event_name="PyData\r\nX-Injected: yes\nBcc: evil@example.org",
        event_venue='<img src="x" onerror="alert(1)">',
    )
    # When it is sent through a real SMTP conversation
    assert notification_send(notification_id=str(notification.id)).outcome == "sent"
    # Then the received message has exactly the headers we set, one recipient, and escaped HTML
    (message,) = email_via_smtp.messages
    assert message["Bcc"] is None and message["X-Injected"] is None
    assert message.get_all("To") == ["ada@example.org"]
    assert set(message.keys()) == {
        "Content-Type",
        "MIME-Version",
        "Subject",
        "From",
        "To",
        "Date",
        "Message-ID",
        "X-Eventplatform-Notification-Id",
    }
    assert message["Subject"] == "You are registered: PyData X-Injected: yes Bcc: evil@example.org"
    html = html_part(message)
    assert "<img" not in html and "&lt;img" in html and "Ada Bcc: evil@example.org" in html


def html_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("html",))
    assert part is not None
    return part.get_content()
