"""The active versions of the wording edited in the admin, kept per process: no query per message.

Each process holds every template's latest version, compiled, in memory. Versions are append-only
(a save or a revert inserts a row, nothing updates or deletes one), so the number of versions is a
generation number that moves with every save in any process: the store reads `count(*)` (one
index-only count of a small table) at most once per MESSAGE_TEMPLATES_CHECK_SECONDS and reloads
everything when it changed. A count, not `max(id)`: two saves committing out of id order would leave
the max unchanged after the second commit. An edit therefore reaches every worker, web process and
the scheduler within that many seconds, without a shared cache server; a process that just saved
reloads at once (`invalidate`).

Crash windows: none of its own; a reload that fails (database down) raises to the caller, whose
send is retried like any other database failure, and the old snapshot stays until a reload works.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass

import structlog
from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.template import Template, TemplateSyntaxError

from apps.notifications.models import MessageTemplateVersion
from apps.notifications.template_engine import compile_template

log = structlog.get_logger(__name__)

# (portal id or None for all portals, kind, channel, locale, role)
Key = tuple[int | None, str, str, str, str]


@dataclass(frozen=True)
class ActiveVersion:
    id: int
    number: int
    subject: Template | None
    text: Template
    html: Template | None


@dataclass(frozen=True)
class _Snapshot:
    generation: int
    versions: dict[Key, ActiveVersion]
    any_per_portal: bool


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.snapshot = _Snapshot(generation=-1, versions={}, any_per_portal=False)
        self.checked = float("-inf")  # time.monotonic() of the last count


_store = _Store()


def _compile(version: MessageTemplateVersion) -> ActiveVersion:
    return ActiveVersion(
        id=version.id,
        number=version.number,
        subject=compile_template(version.subject, html=False) if version.subject else None,
        text=compile_template(version.text, html=False),
        html=compile_template(version.html, html=True) if version.html else None,
    )


def _load(generation: int) -> _Snapshot:
    latest = MessageTemplateVersion.objects.filter(template=OuterRef("template")).order_by("-number").values("id")[:1]
    rows = MessageTemplateVersion.objects.filter(id=Subquery(latest)).select_related("template")
    versions: dict[Key, ActiveVersion] = {}
    for version in rows:
        template = version.template
        key = (template.portal_id, template.kind, template.channel, template.locale, template.role)
        try:
            versions[key] = _compile(version)
        except TemplateSyntaxError as error:
            # Checked at save, so only a version saved before a tag or filter was withdrawn: its
            # message falls back to the next wording of the chain rather than failing every send.
            log.error(
                "message_template.unusable",
                error_code="template_refused",
                template_id=template.id,
                version=version.number,
                error=str(error)[:300],
            )
    return _Snapshot(
        generation=generation, versions=versions, any_per_portal=any(key[0] is not None for key in versions)
    )


def _snapshot() -> _Snapshot:
    now = time.monotonic()
    if now - _store.checked < settings.MESSAGE_TEMPLATES_CHECK_SECONDS:
        return _store.snapshot
    with _store.lock:
        if now - _store.checked < settings.MESSAGE_TEMPLATES_CHECK_SECONDS:  # another thread just did
            return _store.snapshot
        generation = MessageTemplateVersion.objects.count()
        if generation != _store.snapshot.generation:
            _store.snapshot = _load(generation)
        _store.checked = now
        return _store.snapshot


def invalidate() -> None:
    """Reload at the next lookup (this process saved a version, or a test rolled versions back: the
    count alone could then come back to a number already seen)."""
    with _store.lock:
        _store.snapshot = dataclasses.replace(_store.snapshot, generation=-1)
        _store.checked = float("-inf")


def has_versions() -> bool:
    return bool(_snapshot().versions)


def needs_portal() -> bool:
    """Whether some portal has wording of its own: only then does a send need its portal's id."""
    return _snapshot().any_per_portal


def first_active(
    *, portal_id: int | None, kind: str, channel: str, role: str, locales: list[str]
) -> tuple[str, ActiveVersion] | None:
    """The first of `locales` with a version (the portal's own, else the one for all portals), with
    that locale; None at once while nothing was edited (the usual send: no lookups at all)."""
    versions = _snapshot().versions
    if not versions:
        return None
    for locale in locales:
        found = (portal_id is not None and versions.get((portal_id, kind, channel, locale, role))) or versions.get(
            (None, kind, channel, locale, role)
        )
        if found:
            return locale, found
    return None


def reset() -> None:
    """Forget every version, as if a check had just found none (tests: each starts on an empty
    database, and rendering without a database stays possible until a save or the interval)."""
    with _store.lock:
        _store.snapshot = _Snapshot(generation=-1, versions={}, any_per_portal=False)
        _store.checked = time.monotonic()
