"""The safe template engine for wording edited in the admin, its checks at save, and SMS segments.

Staff-written templates are compiled by their own `django.template.Engine`, never the project's:
- no loaders and no `loader_tags` (`{% include %}`, `{% extends %}`, `{% block %}` do not exist), an
  empty `libraries` (`{% load %}` of anything fails) and only the harmless built-in tags of
  ALLOWED_TAGS (no `{% load %}`, `{% debug %}`, `{% url %}`, `{% csrf_token %}`, `{% autoescape %}`):
  an unknown tag is a TemplateSyntaxError at compile time, with its line;
- no `safe`/`safeseq` filter in HTML, and no `{% autoescape off %}`: attendee data is always escaped
  there (texts are not escaped at all, so `safe` changes nothing in them and is allowed);
- the `date` filter is the remembered one of `templatetags/event_dates.py`, built in (no `{% load %}`).
HTML is compiled with autoescape on, subjects, texts and SMS with it off (they are not HTML).

`template_errors` is the check at save: the source must compile, name only the variables the
sample context has (plus the names its own `{% for %}`/`{% with %}` introduce), and render with the
sample context; each refusal names the line that fails.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from django.template import Context, Engine, Library, Node, Template, TemplateSyntaxError, defaultfilters, defaulttags
from django.template.base import FilterExpression, Variable
from django.template.defaulttags import ForNode, WithNode

from apps.notifications.templatetags import event_dates

ALLOWED_TAGS = (
    "comment",
    "cycle",
    "filter",
    "firstof",
    "for",
    "if",
    "ifchanged",
    "now",
    "resetcycle",
    "spaceless",
    "templatetag",
    "verbatim",
    "widthratio",
    "with",
)
# In HTML, `safe` would let attendee data through unescaped (in text it changes nothing: allowed).
REFUSED_HTML_FILTERS = ("safe", "safeseq")

# A registration as the templates see it (the folded state a notification carries), used for the
# check at save and the preview when no registration is chosen. Its keys are the allowed variables.
SAMPLE_CONTEXT: dict[str, Any] = {
    "email": "ada@example.com",
    "phone": "+4915112345678",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "role": "attendee",
    "locale": "en",
    "status": "active",
    "event_external_id": "EV-1",
    "event_name": "PyCon Sample",
    "event_starts_at": "2027-05-14T09:00:00+00:00",
    "event_timezone": "Europe/Berlin",
    "event_venue": "Congress Hall, Room 1",
}
# Added by rendering.template_context from event_starts_at and the send time.
DERIVED_VARIABLES = ("starts_local", "starts_day", "add_to_calendar_url")
ALLOWED_VARIABLES = frozenset(SAMPLE_CONTEXT) | frozenset(DERIVED_VARIABLES)

# GSM 03.38: the basic set costs one septet, the extension set two (escape + character).
_GSM_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = "^{}\\[~]|€\f"
_GSM_SET = frozenset(_GSM_BASIC + _GSM_EXTENSION)
# Twilio refuses a body over 1,600 characters; 10 segments is the most we let a template produce
# (a 2,000-character SMS is refused at save, never silently split into 14 paid parts).
SMS_MAX_SEGMENTS = 10


@dataclass(frozen=True)
class Segments:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int  # septets (GSM-7, extension characters count two) or UTF-16 code units (UCS-2)
    count: int  # SMS parts the carrier bills


def sms_segments(text: str) -> Segments:
    """How many SMS parts `text` takes: GSM-7 fits 160 septets in one part, 153 per part when
    concatenated (the header takes 7); any character outside GSM 03.38 makes it UCS-2: 70, then 67
    UTF-16 code units per part (an emoji takes two)."""
    if all(char in _GSM_SET for char in text):
        units, single, multi, encoding = sum(2 if c in _GSM_EXTENSION else 1 for c in text), 160, 153, "GSM-7"
    else:
        units, single, multi, encoding = len(text.encode("utf-16-le")) // 2, 70, 67, "UCS-2"
    if units == 0:
        return Segments(encoding, 0, 0)
    return Segments(encoding, units, 1 if units <= single else -(-units // multi))


def _library(*, html: bool) -> Library:
    refused = REFUSED_HTML_FILTERS if html else ()
    library = Library()
    library.tags = {name: defaulttags.register.tags[name] for name in ALLOWED_TAGS}
    library.filters = {
        name: function for name, function in defaultfilters.register.filters.items() if name not in refused
    }
    library.filters["date"] = event_dates.register.filters["date"]
    return library


class _SafeEngine(Engine):
    # Without Django's defaulttags/loader_tags: the tags come from _library() alone.
    default_builtins: ClassVar[list[str]] = []


def _engine(*, autoescape: bool) -> Engine:
    # debug=True: errors carry the line they happened on (exception.template_debug).
    engine = _SafeEngine(dirs=[], app_dirs=False, loaders=[], libraries={}, autoescape=autoescape, debug=True)
    engine.template_builtins = [_library(html=autoescape)]
    return engine


HTML_ENGINE = _engine(autoescape=True)
TEXT_ENGINE = _engine(autoescape=False)


def compile_template(source: str, *, html: bool) -> Template:
    return (HTML_ENGINE if html else TEXT_ENGINE).from_string(source)


class TemplateRefused(ValueError):
    """A template that may not be saved; `line` is 1-based (0 when not known)."""

    def __init__(self, message: str, *, line: int = 0) -> None:
        super().__init__(f"Line {line}: {message}" if line else message)
        self.line = line


def _line_of(error: Exception) -> int:
    debug = getattr(error, "template_debug", None)
    return int(debug["line"]) if debug else 0


def _nodes(template: Template) -> Iterator[Node]:
    return iter(template.nodelist.get_nodes_by_type(Node))


def _expressions(value: Any, depth: int = 0) -> Iterator[FilterExpression | Variable]:
    """Every FilterExpression and Variable held by a node's attributes (an `{% if %}` keeps them in
    its condition tree, a `{% for %}` in `sequence`, a `{% with %}` in `extra_context`)."""
    if depth > 8 or isinstance(value, (str, int, float, bool, type(None), Node, Template)):
        return
    if isinstance(value, (FilterExpression, Variable)):
        yield value
        if isinstance(value, FilterExpression):
            yield from _expressions(value.var, depth + 1)
            for _function, arguments in value.filters:
                for _lookup, argument in arguments:
                    yield from _expressions(argument, depth + 1)
        return
    if isinstance(value, dict):
        for item in value.values():
            yield from _expressions(item, depth + 1)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _expressions(item, depth + 1)
    elif hasattr(value, "__dict__"):  # an `{% if %}` condition operator, a `{% cycle %}` value…
        for name, item in vars(value).items():
            if name not in ("nodelist", "token", "origin") and not name.startswith("nodelist"):
                yield from _expressions(item, depth + 1)


def _bound_names(template: Template) -> set[str]:
    """Names the template gives itself: loop variables, `{% with %}`, and the `as name` of
    `{% now %}`, `{% firstof %}`, `{% widthratio %}` (asvar) and `{% cycle %}` (variable_name)."""
    names = {"forloop"}
    for node in _nodes(template):
        if isinstance(node, ForNode):
            names.update(node.loopvars)
        elif isinstance(node, WithNode):
            names.update(node.extra_context)
        for attribute in ("asvar", "variable_name"):
            if isinstance(name := getattr(node, attribute, None), str):
                names.add(name)
    return names


def _unknown_variables(template: Template) -> Iterator[tuple[str, int]]:
    allowed = ALLOWED_VARIABLES | _bound_names(template)
    for node in _nodes(template):
        token = getattr(node, "token", None)
        line = int(token.lineno or 0) if token is not None else 0
        for expression in _expressions({key: value for key, value in vars(node).items() if key != "token"}):
            if isinstance(expression, Variable) and expression.lookups:
                if expression.lookups[0] not in allowed:
                    yield expression.lookups[0], line


def template_errors(source: str, *, html: bool, context: dict[str, Any]) -> None:
    """Raise TemplateRefused (with the line) unless `source` compiles in the safe engine, names
    only known variables and renders with `context` (the sample, as templates see it)."""
    try:
        template = compile_template(source, html=html)
    except TemplateSyntaxError as error:
        raise TemplateRefused(_syntax_message(error), line=_line_of(error)) from error
    for name, line in _unknown_variables(template):
        known = ", ".join(sorted(ALLOWED_VARIABLES))
        raise TemplateRefused(f"unknown variable '{name}' (known: {known})", line=line)
    try:
        template.render(Context(context, autoescape=html))
    except Exception as error:
        raise TemplateRefused(f"does not render: {error}", line=_line_of(error)) from error


def _syntax_message(error: TemplateSyntaxError) -> str:
    message = str(error)
    tag = re.search(r"Invalid block tag on line \d+: '(\w+)'", message)
    if tag and tag.group(1) not in ALLOWED_TAGS and not tag.group(1).startswith(("end", "el", "empty")):
        return f"the tag {{% {tag.group(1)} %}} is not allowed here (allowed: {', '.join(ALLOWED_TAGS)})"
    return message
