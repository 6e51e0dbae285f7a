"""Rendering a notification from Django templates, per kind, role and locale (`en` fallback).

Templates live in apps/notifications/templates/notifications/<locale>/<kind>.<part>, where part is
`subject.txt`, `body.txt`, `body.html` (e-mail) or `sms.txt`; a `<kind>.<role>.<part>` file wins
over `<kind>.<part>` so speakers can get their own wording. Attendee-provided text is stripped
of control characters and line separators (no header injection through a subject) and
auto-escaped in HTML (no markup through a name). Dates and month names follow the template's locale
(`translation.override`), times the event's timezone.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zoneinfo
from dataclasses import dataclass
from typing import Any

from django.template import TemplateDoesNotExist
from django.template.backends.django import Template
from django.template.loader import select_template
from django.utils import timezone, translation
from django.utils.dateparse import parse_datetime

from apps.notifications import channels

FALLBACK_LOCALE = "en"
_LOCALE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})?")
# C0 and C1 controls and Unicode line/paragraph separators: anything a mail header could split at.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


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
    return clean


def _locales(locale: str) -> list[str]:
    locale = (locale or FALLBACK_LOCALE).lower().replace("_", "-")
    if not _LOCALE.fullmatch(locale):  # it becomes part of a template path
        locale = FALLBACK_LOCALE
    candidates = [locale, locale.split("-")[0], FALLBACK_LOCALE]
    return list(dict.fromkeys(candidates))


def _template_names(kind: str, role: str, locale: str, part: str) -> list[str]:
    names = []
    for candidate in _locales(locale):
        names += [f"notifications/{candidate}/{kind}.{role}.{part}", f"notifications/{candidate}/{kind}.{part}"]
    return names


@functools.lru_cache(maxsize=512)
def _template(kind: str, role: str, locale: str, part: str) -> Template | None:
    """The first template that exists for these, looked up once per process: the loaders' misses
    (no speaker wording, no `fr` text) raise and catch an exception per name on every lookup."""
    try:
        return select_template(_template_names(kind, role, locale, part))
    except TemplateDoesNotExist:
        return None


def _render(kind: str, role: str, locale: str, part: str, context: dict[str, Any]) -> str | None:
    template = _template(kind, role, locale, part)
    if template is None:
        return None
    # The locale the template was found in, not the one asked for: a `fr` attendee gets the `en`
    # text, and must then get English month names in it too.
    found_locale = template.origin.template_name.split("/")[1]
    with translation.override(found_locale):
        return template.render(context)


def render(*, kind: str, channel: str, context: dict[str, Any], now: dt.datetime | None = None) -> Rendered:
    values = template_context(context, now=now)
    role, locale = values.get("role") or "attendee", values.get("locale") or FALLBACK_LOCALE
    text_template = channels.channel(channel).text_template
    if text_template:  # a text-only channel (SMS): one line of text, no subject
        text = _render(kind, role, locale, text_template, values) or ""
        return Rendered(subject="", text=" ".join(text.split()), html=None)
    subject = _render(kind, role, locale, "subject.txt", values) or kind
    text = _render(kind, role, locale, "body.txt", values) or ""
    html = _render(kind, role, locale, "body.html", values)
    return Rendered(subject=" ".join(subject.split()), text=text.strip() + "\n", html=html)
