"""Recording deliveries: the event and its outbox row in one transaction."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.outbox.services import outbox_enqueue
from apps.webhooks.models import Portal, PortalSecret, RateWindow, WebhookEvent
from apps.webhooks.signature import secret_key


@dataclass(frozen=True)
class RecordedEvent:
    event_id: uuid.UUID
    status: str
    errors: Any
    duplicate: bool


@transaction.atomic
def webhook_event_record(
    *,
    portal: Portal,
    delivery_id: str,
    event_type: str,
    raw_body: bytes,
    payload: Any,
    errors: Any = None,
) -> RecordedEvent:
    """Store one signed delivery; an accepted one also gets the outbox row that has it applied.

    The insert is `ON CONFLICT DO NOTHING` on (portal, delivery_id): of two identical deliveries
    racing, the second waits for the first to commit and then finds its row, so both answer with
    one event id. If the process dies before COMMIT, nothing was stored and the portal, having
    had no 2xx, delivers again.
    """
    status = WebhookEvent.Status.REJECTED if errors is not None else WebhookEvent.Status.ACCEPTED
    event_id = uuid.uuid4()
    table = WebhookEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (id, portal_id, delivery_id, type, status, raw_body, payload, errors, received_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (portal_id, delivery_id) DO NOTHING RETURNING id",
            [
                event_id.hex if connection.vendor == "sqlite" else event_id,
                portal.pk,
                delivery_id,
                event_type[:64],
                status,
                raw_body,
                None if payload is None else json.dumps(payload),
                None if errors is None else json.dumps(errors),
                timezone.now(),
            ],
        )
        inserted = cursor.fetchone() is not None
    if not inserted:
        existing = WebhookEvent.objects.only("id", "status", "errors").get(portal=portal, delivery_id=delivery_id)
        return RecordedEvent(event_id=existing.id, status=existing.status, errors=existing.errors, duplicate=True)
    if status == WebhookEvent.Status.ACCEPTED:
        outbox_enqueue(
            actor_name="webhook_event_apply",
            queue_name="registrations",
            kwargs={"event_id": str(event_id)},
            correlation_id=str(event_id),
        )
    return RecordedEvent(event_id=event_id, status=status, errors=errors, duplicate=False)


def portal_rate_limit_hit(*, portal: Portal, now: dt.datetime | None = None) -> int | None:
    """Count this request in the portal's current minute; return seconds to wait when over the limit.

    The counter lives in the database so every web worker shares it; portals without a limit
    (the default) cost nothing.
    """
    if not portal.rate_limit_per_minute:
        return None
    now = now or timezone.now()
    window_start = now.replace(second=0, microsecond=0)
    with transaction.atomic():
        window, created = RateWindow.objects.get_or_create(portal=portal, window_start=window_start)
        RateWindow.objects.filter(pk=window.pk).update(count=F("count") + 1)
        window.refresh_from_db(fields=["count"])
    if window.count > portal.rate_limit_per_minute:
        return 60 - now.second
    return None


def generate_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@transaction.atomic
def portal_create(*, slug: str, name: str | None = None, secret: str | None = None) -> tuple[Portal, str, bool]:
    """Create the portal, or return it; a given secret is added if the portal lacks it.

    Safe to run twice or concurrently: the slug and (portal, secret) are unique.
    Returns (portal, the secret to print, whether the portal was created).
    """
    if secret is not None:
        if not secret.startswith("whsec_"):
            raise ValueError("A secret must look like whsec_<base64>.")
        try:
            if len(secret_key(secret)) < 16:
                raise ValueError("A secret must hold at least 16 key bytes.")
            base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            raise ValueError("The part after whsec_ must be base64.") from None
    portal, created = Portal.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    if secret is None:
        existing = portal.secrets.filter(active=True).order_by("-created_at").first()
        if existing is not None:
            return portal, existing.secret, created
        secret = generate_secret()
    PortalSecret.objects.get_or_create(portal=portal, secret=secret)
    return portal, secret, created
