from __future__ import annotations

import threading
import time

from apps.webhooks.models import Portal, PortalSecret

PORTAL_CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, tuple[Portal, list[str]] | None]] = {}
_cache_lock = threading.Lock()


def portal_with_secrets(*, slug: str) -> tuple[Portal, list[str]] | None:
    """The active portal and its active secrets; None for unknown or disabled portals.

    Cached per process for PORTAL_CACHE_SECONDS: every webhook needs it, and it changes only when
    staff edit a portal. A disabled portal or a revoked secret stops working within that time.
    """
    now = time.monotonic()
    cached = _cache.get(slug)
    if cached is not None and now - cached[0] < PORTAL_CACHE_SECONDS:
        return cached[1]
    found = _load_portal(slug)
    with _cache_lock:
        if len(_cache) > 1000:  # unknown slugs must not grow it without bound
            _cache.clear()
        _cache[slug] = (now, found)
    return found


def portal_active_secrets(*, slug: str) -> list[str]:
    """The active secrets of the portal with this slug, oldest first (none for an unknown slug); uncached."""
    return [s.secret for s in PortalSecret.objects.filter(portal__slug=slug, active=True).order_by("created_at")]


def portal_cache_clear() -> None:
    with _cache_lock:
        _cache.clear()


def _load_portal(slug: str) -> tuple[Portal, list[str]] | None:
    rows = list(
        Portal.objects.filter(slug=slug, active=True).values_list(
            "id", "slug", "name", "rate_limit_per_minute", "secrets__secret", "secrets__active"
        )
    )
    if not rows:
        return None
    portal_id, slug, name, rate_limit, _, _ = rows[0]
    portal = Portal(id=portal_id, slug=slug, name=name, active=True, rate_limit_per_minute=rate_limit)
    return portal, [secret for *_, secret, active in rows if secret and active]
