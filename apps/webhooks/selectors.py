from __future__ import annotations

from apps.webhooks.models import Portal


def portal_with_secrets(*, slug: str) -> tuple[Portal, list[str]] | None:
    """The active portal and its active secrets, in one query; None for unknown or disabled portals."""
    rows = list(
        Portal.objects.filter(slug=slug, active=True)
        .values_list("id", "slug", "name", "rate_limit_per_minute", "secrets__secret", "secrets__active")
    )
    if not rows:
        return None
    portal_id, slug, name, rate_limit, _, _ = rows[0]
    portal = Portal(id=portal_id, slug=slug, name=name, active=True, rate_limit_per_minute=rate_limit)
    return portal, [secret for *_, secret, active in rows if secret and active]
