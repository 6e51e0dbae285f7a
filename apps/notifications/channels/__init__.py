"""The channel registry: which channels exist, which kinds go by each, to which recipient, through
which providers.

A channel is one module or package (`email/`, `sms/` here) exposing `CHANNEL`, a `Channel`: its
name, the notification kinds it carries, where its address is in a registration's state, the
address's one normal form (eventplatform.addresses) and how logs mask it, its providers in order of
preference (`build_providers`, read from settings) and how long their calls may take, its rows of
the failure classification, whether it is switched on and, for a text-only channel, its template.
Settings name the channels (NOTIFICATION_CHANNELS, a list of module paths); this module loads them
once per process (checks.py refuses at start a list that does not load). The core sends through
whichever channels are registered and imports none of them: adding one is one package and one
settings line (docs/architecture.md, "Where new things go").

Registrations describe what happened (kind, state); `channels_for` and `recipient_for` turn it into
(channel, recipient).
"""

from __future__ import annotations

import functools
import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.notifications.classification import Rule
from apps.notifications.errors import ProviderPermanentError
from apps.notifications.models import Notification
from apps.notifications.providers import Provider

NAME_LENGTH = Notification._meta.get_field("channel").max_length or 0


def _always() -> bool:
    return True


@dataclass(frozen=True)
class Channel:
    name: str  # Notification.channel (at most NAME_LENGTH characters: the column's)
    kinds: frozenset[str]  # the notification kinds that go by it
    address_field: str  # the key of a registration's state that holds its address
    normalise: Callable[[str], str]  # the address in its one normal form, as validated and erased
    mask: Callable[[str], str | None]  # the address as a log line may show it
    build_providers: Callable[[], list[Provider]]  # primary first, then fallbacks, from settings
    # The longest one send can spend in its providers' calls (a fallback tried after the primary
    # included): the claim must outlast it (checks.py).
    longest_call_seconds: Callable[[], float]
    rules: tuple[Rule, ...]  # its rows of the failure classification
    enabled: Callable[[], bool] = _always  # switched on by settings (SMS needs an API, or the console)
    # The one template part of a text-only message (`sms.txt`: <kind>.sms.txt); None for an e-mail
    # (subject, text and HTML parts).
    text_template: str | None = None

    def recipient(self, state: dict[str, Any]) -> str:
        return self.normalise(state.get(self.address_field) or "")

    def masked(self, address: str) -> str:
        return self.mask(address) or ""


@functools.cache
def _load(paths: tuple[str, ...]) -> dict[str, Channel]:
    loaded: dict[str, Channel] = {}
    for path in paths:
        found = getattr(importlib.import_module(path), "CHANNEL", None)
        if not isinstance(found, Channel):
            raise ImproperlyConfigured(f"NOTIFICATION_CHANNELS: {path} has no CHANNEL (a channels.Channel).")
        if not 0 < len(found.name) <= NAME_LENGTH:
            raise ImproperlyConfigured(
                f"NOTIFICATION_CHANNELS: {path}: a channel's name has 1 to {NAME_LENGTH} characters."
            )
        if found.name in loaded:
            raise ImproperlyConfigured(f"NOTIFICATION_CHANNELS: two channels are named {found.name!r}.")
        loaded[found.name] = found
    return loaded


def channels() -> list[Channel]:
    """The channels of NOTIFICATION_CHANNELS, in its order."""
    return list(_load(tuple(settings.NOTIFICATION_CHANNELS)).values())


def channel(name: str) -> Channel:
    found = _load(tuple(settings.NOTIFICATION_CHANNELS)).get(name)
    if found is None:
        raise ProviderPermanentError(f"Unknown channel {name}.", code="invalid_recipient")
    return found


def channels_for(kind: str, state: dict[str, Any]) -> list[str]:
    """Channels that carry this kind, are switched on and have a recipient. A cancellation seen
    before its registration's data has none yet; the notifications are recomputed from the whole
    log on every event, so it is created as soon as an event brings the address."""
    return [
        candidate.name
        for candidate in channels()
        if kind in candidate.kinds and state.get(candidate.address_field) and candidate.enabled()
    ]


def recipient_for(name: str, state: dict[str, Any]) -> str:
    """The channel's address in its one normal form (eventplatform.addresses), as validated and erased."""
    return channel(name).recipient(state)


def rules() -> tuple[Rule, ...]:
    """Every channel's rows of the failure classification (the table in docs/notifications.md)."""
    return tuple(rule for candidate in channels() for rule in candidate.rules)


_providers: dict[str, list[Provider]] = {}
_lock = threading.Lock()


def providers_for(name: str) -> list[Provider]:
    """The channel's providers in order of preference (primary, then fallback), built once per process."""
    with _lock:
        if name not in _providers:
            _providers[name] = channel(name).build_providers()
        return _providers[name]


def reset_providers() -> None:
    """Forget built providers (tests change settings between cases)."""
    with _lock:
        _providers.clear()
