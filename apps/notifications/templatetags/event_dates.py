"""Django's `date` filter, remembered: the one costly filter of the notification templates.

Every attendee of an event gets the same start time, formatted the same way in one of a few
locales, yet Django's `date` parses the format and looks up the month and day names again on each
call: a third of rendering an e-mail. `{% load event_dates %}` replaces `date` in a template with
the same filter, which remembers its recent results per (value, format, active language).
"""

from __future__ import annotations

import functools
from typing import Any

from django import template
from django.template.defaultfilters import date as django_date
from django.utils import translation

register = template.Library()


@functools.lru_cache(maxsize=1024)
def _formatted(value: Any, arg: str | None, language: str | None) -> str:
    return django_date(value, arg)


@register.filter(expects_localtime=True, is_safe=False)
def date(value: Any, arg: str | None = None) -> str:
    try:
        hash(value)
    except TypeError:  # an unhashable value: nothing to remember it by
        return django_date(value, arg)
    return _formatted(value, arg, translation.get_language())
