"""Rendering a notification from Django templates, per kind, role and locale.

Locales fall back along a chain (_locales): the attendee's `fr-CA`, then `fr`, then the portal's
default locale (`portal_locale` in the context, from Portal.default_locale), then `en`.

Templates live in apps/notifications/templates/notifications/<locale>/<kind>.<part>, where part is
`subject.txt`, `body.txt`, `body.html` (e-mail) or `sms.txt`; a `<kind>.<role>.<part>` file wins
over `<kind>.<part>` so speakers can get their own wording. Attendee-provided text is stripped
of control characters and line separators (no header injection through a subject) and
auto-escaped in HTML (no markup through a name). Dates and month names follow the template's locale
(`translation.override`), times the event's timezone.

Wording edited in the admin (MessageTemplate, compiled by the safe engine of template_engine.py and
kept per process by template_store.py) wins over the files: for each locale of the chain, the
portal's own version, then the one for all portals, then the shipped file of that locale. A version
is a whole message (subject, text and HTML, or the SMS text) for one role: speakers keep the shipped
speaker wording until a speaker version is saved.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zoneinfo
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings
from django.template import Context, TemplateDoesNotExist
from django.template.backends.django import Template
from django.template.loader import select_template
from django.utils import timezone, translation
from django.utils.dateparse import parse_datetime

from apps.notifications import channels, template_store

FALLBACK_LOCALE = "en"
_LOCALE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})?")
# C0 and C1 controls and Unicode line/paragraph separators: anything a mail header could split at.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None
    # The MessageTemplateVersion used; None: the shipped files.
    template_version_id: int | None = None


def _clean(value: Any) -> Any:
    return _CONTROL.sub(" ", value).strip() if isinstance(value, str) else value


def _starts_day(starts_at: dt.datetime, tz: dt.tzinfo, now: dt.datetime) -> str:
    """ "today" or "tomorrow" when true in the event's timezone at `now` (the send time), else "":
    a reminder sent at 07:00 for an event at 20:00 the same day says "today", not "tomorrow"."""
    days = (starts_at.astimezone(tz).date() - now.astimezone(tz).date()).days
    return {0: "today", 1: "tomorrow"}.get(days, "")


def template_context(context: dict[str, Any], *, now: dt.datetime | None = None) -> dict[str, Any]:
    """The values templates see. `starts_local`: the start in the event's timezone; `starts_day`:
    "today", "tomorrow" or "" relative to `now` (the send time: rendering happens at send)."""
    clean = {key: _clean(value) for key, value in context.items()}
    starts_at = parse_datetime(clean.get("event_starts_at") or "")
    if starts_at is not None:
        try:
            tz = zoneinfo.ZoneInfo(clean.get("event_timezone") or "UTC")
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            tz = dt.UTC
        # Naive on purpose: Django's date filter would convert an aware value to the server's zone.
        clean["starts_local"] = starts_at.astimezone(tz).replace(tzinfo=None)
        if timezone.is_aware(starts_at):
            clean["starts_day"] = _starts_day(starts_at, tz, now or timezone.now())
            clean["add_to_calendar_url"] = add_to_calendar_url(clean, starts_at)
    return clean


def event_duration() -> dt.timedelta:
    """How long a calendar entry lasts: webhooks carry no end time (docs/organisers.md, "Calendar entry")."""
    return dt.timedelta(minutes=settings.CALENDAR_EVENT_MINUTES)


def add_to_calendar_url(values: dict[str, Any], starts_at: dt.datetime) -> str:
    """A Google Calendar "add event" link, for readers whose mail client ignores the e-mail's
    calendar part (channels/email/calendar.py): it needs no account of ours, no download view and
    no PUBLIC_BASE_URL. The same start, length and place as the calendar part."""
    utc = starts_at.astimezone(dt.UTC)
    ends = utc + event_duration()
    query = {
        "action": "TEMPLATE",
        "text": values.get("event_name") or "",
        "dates": f"{utc:%Y%m%dT%H%M%SZ}/{ends:%Y%m%dT%H%M%SZ}",
        "location": values.get("event_venue") or "",
        "ctz": values.get("event_timezone") or "UTC",
    }
    return "https://calendar.google.com/calendar/render?" + urlencode(query, quote_via=quote)


def _locale_name(value: str | None) -> str | None:
    locale = (value or "").lower().replace("_", "-")
    return locale if _LOCALE.fullmatch(locale) else None  # it becomes part of a template path


def _locales(locale: str, portal_locale: str = FALLBACK_LOCALE) -> list[str]:
    """Where to look for wording, nearest first: the attendee's locale, its language, the portal's
    default locale (and its language), English. `fr-CA` on a portal whose default is `de`:
    fr-ca, fr, de, en. A value that is not a locale name is skipped."""
    candidates = []
    for value in (locale, portal_locale):
        name = _locale_name(value)
        if name:
            candidates += [name, name.split("-")[0]]
    return list(dict.fromkeys([*candidates, FALLBACK_LOCALE]))


def _template_names(kind: str, role: str, locale: str, part: str, portal_locale: str) -> list[str]:
    names = []
    for candidate in _locales(locale, portal_locale):
        names += [f"notifications/{candidate}/{kind}.{role}.{part}", f"notifications/{candidate}/{kind}.{part}"]
    return names


@functools.lru_cache(maxsize=512)
def _template(kind: str, role: str, locale: str, part: str, portal_locale: str = FALLBACK_LOCALE) -> Template | None:
    """The first template that exists for these, looked up once per process: the loaders' misses
    (no speaker wording, no `fr` text) raise and catch an exception per name on every lookup."""
    try:
        return select_template(_template_names(kind, role, locale, part, portal_locale))
    except TemplateDoesNotExist:
        return None


def _render(
    kind: str, role: str, locale: str, part: str, context: dict[str, Any], portal_locale: str = FALLBACK_LOCALE
) -> str | None:
    template = _template(kind, role, locale, part, portal_locale)
    if template is None:
        return None
    # The locale the template was found in, not the one asked for: a `fr` attendee gets the `en`
    # text, and must then get English month names in it too.
    found_locale = template.origin.template_name.split("/")[1]
    with translation.override(found_locale):
        return template.render(context)


def _shipped_locale(kind: str, role: str, locale: str, channel: str, portal_locale: str) -> str | None:
    template = _template(kind, role, locale, channels.channel(channel).text_template or "body.txt", portal_locale)
    return template.origin.template_name.split("/")[1] if template is not None else None


def _edited(
    kind: str, channel: str, role: str, locale: str, portal_locale: str, portal_id: int | None
) -> tuple[str, template_store.ActiveVersion] | None:
    """The edited version that wins, with its locale: searched along the chain down to the locale
    the shipped files would be found in (a file of a nearer locale wins over an edit of a farther one)."""
    if not template_store.has_versions():
        return None
    chain = _locales(locale, portal_locale)
    shipped = _shipped_locale(kind, role, locale, channel, portal_locale)
    if shipped in chain:
        chain = chain[: chain.index(shipped) + 1]
    return template_store.first_active(portal_id=portal_id, kind=kind, channel=channel, role=role, locales=chain)


def _render_edited(
    version: template_store.ActiveVersion, locale: str, channel: str, kind: str, values: dict[str, Any]
) -> Rendered:
    with translation.override(locale):
        text = version.text.render(Context(values, autoescape=False))
        if channels.channel(channel).text_template:  # a text-only channel (SMS)
            return Rendered(subject="", text=" ".join(text.split()), html=None, template_version_id=version.id)
        subject = version.subject.render(Context(values, autoescape=False)) if version.subject else ""
        html = version.html.render(Context(values, autoescape=True)) if version.html else None
    return Rendered(
        subject=" ".join(subject.split()) or kind,
        text=text.strip() + "\n",
        html=html,
        template_version_id=version.id,
    )


def needs_portal() -> bool:
    """Whether render() needs `portal_id` (some portal has wording of its own); else it may be None."""
    return template_store.needs_portal()


def render(
    *,
    kind: str,
    channel: str,
    context: dict[str, Any],
    now: dt.datetime | None = None,
    portal_id: int | None = None,
) -> Rendered:
    values = template_context(context, now=now)
    role, locale = values.get("role") or "attendee", values.get("locale") or FALLBACK_LOCALE
    portal_locale = values.get("portal_locale") or FALLBACK_LOCALE  # put there at creation (senders.py)
    edited = _edited(kind, channel, role, locale, portal_locale, portal_id)
    if edited is not None:
        return _render_edited(edited[1], edited[0], channel, kind, values)
    text_template = channels.channel(channel).text_template
    if text_template:  # a text-only channel (SMS): one line of text, no subject
        text = _render(kind, role, locale, text_template, values, portal_locale) or ""
        return Rendered(subject="", text=" ".join(text.split()), html=None)
    subject = _render(kind, role, locale, "subject.txt", values, portal_locale) or kind
    text = _render(kind, role, locale, "body.txt", values, portal_locale) or ""
    html = _render(kind, role, locale, "body.html", values, portal_locale)
    return Rendered(subject=" ".join(subject.split()), text=text.strip() + "\n", html=html)
