"""Recording deliveries: the event and its outbox row in one transaction."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from apps.outbox.services import outbox_insert, outbox_insert_select_sql, outbox_message_fields, outbox_row_params
from apps.webhooks.apply_actor import APPLY_ACTOR
from apps.webhooks.models import Portal, PortalSecret, RateWindow, WebhookEvent
from apps.webhooks.signature import validate_secret


@dataclass(frozen=True)
class RecordedEvent:
    event_id: uuid.UUID
    status: str
    errors: Any
    duplicate: bool


_INSERT_EVENT = (
    f"INSERT INTO {WebhookEvent._meta.db_table} "
    "(id, portal_id, delivery_id, type, status, raw_body, payload, errors, received_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (portal_id, delivery_id) DO NOTHING RETURNING id"
)
# PostgreSQL: the event and its outbox row in ONE statement, which is one transaction by itself:
# one round trip instead of BEGIN, two INSERTs and COMMIT. The outbox insert happens only if the
# event insert did (no conflict) and the delivery was accepted.
_INSERT_EVENT_AND_OUTBOX = (
    f"WITH event AS ({_INSERT_EVENT}), outbox AS ({outbox_insert_select_sql(from_clause='event WHERE %s')}) "
    "SELECT id FROM event"
)


def webhook_event_record(
    *,
    portal: Portal,
    delivery_id: str,
    event_type: str,
    raw_body: bytes,
    payload: Any,
    errors: Any = None,
) -> RecordedEvent:
    """Store one signed delivery; an accepted one also gets the outbox row that has it applied,
    in the same transaction.

    The insert is `ON CONFLICT DO NOTHING` on (portal, delivery_id): of two identical deliveries
    racing, the second waits for the first to commit and then finds its row, so both answer with
    one event id. If the process dies before the commit, nothing was stored and the portal,
    having had no 2xx, delivers again.
    """
    status = WebhookEvent.Status.REJECTED if errors is not None else WebhookEvent.Status.ACCEPTED
    event_id = uuid.uuid4()
    accepted = status == WebhookEvent.Status.ACCEPTED
    event_values = [
        event_id.hex if connection.vendor == "sqlite" else event_id,
        portal.pk,
        delivery_id,
        event_type[:64],
        status,
        raw_body,
        None if payload is None else json.dumps(payload),
        None if errors is None else json.dumps(errors),
        timezone.now(),
    ]
    outbox = outbox_message_fields(
        kwargs={"event_id": str(event_id)},
        correlation_id=str(event_id),
        actor_name=APPLY_ACTOR["actor_name"],
        queue_name=APPLY_ACTOR["queue_name"],
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _INSERT_EVENT_AND_OUTBOX,
                [*event_values, *outbox_row_params(outbox), accepted],
            )
            inserted = cursor.fetchone() is not None
    else:
        inserted = _insert_event_then_outbox(event_values, outbox if accepted else None)
    if not inserted:
        existing = WebhookEvent.objects.only("id", "status", "errors").get(portal=portal, delivery_id=delivery_id)
        return RecordedEvent(event_id=existing.id, status=existing.status, errors=existing.errors, duplicate=True)
    return RecordedEvent(event_id=event_id, status=status, errors=errors, duplicate=False)


@transaction.atomic
def _insert_event_then_outbox(event_values: list[Any], outbox: dict[str, Any] | None) -> bool:
    """The portable path (SQLite, embedded mode): two statements in one transaction."""
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_EVENT, event_values)
        inserted = cursor.fetchone() is not None
    if inserted and outbox is not None:
        outbox_insert(outbox)
    return inserted


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
def portal_secret_rotate(*, portal: Portal) -> str:
    """Add a freshly generated, active secret to the portal and return it (the only time it is
    shown in full). The portal's other secrets stay active: the intake accepts any active one, so
    the portal switches when it is ready and staff deactivate the old secret afterwards (rotation
    without downtime). If the process dies before the commit, nothing was added; run it again."""
    secret = generate_secret()
    PortalSecret.objects.create(portal=portal, secret=secret)
    return secret


@transaction.atomic
def portal_create(*, slug: str, name: str | None = None, secret: str | None = None) -> tuple[Portal, str, bool]:
    """Create the portal, or return it; a given secret is added if the portal lacks it.

    Safe to run twice or concurrently: the slug is unique, and the portal's row is locked while
    its secrets are compared (they are stored encrypted, so the database cannot compare them).
    Returns (portal, the secret to print, whether the portal was created).
    """
    if secret is not None:
        validate_secret(secret)
    portal, created = Portal.objects.get_or_create(slug=slug, defaults={"name": name or slug})
    Portal.objects.select_for_update().filter(pk=portal.pk).exists()
    stored = list(portal.secrets.order_by("-created_at"))
    if secret is None:
        active = [s.secret for s in stored if s.active]
        if active:
            return portal, active[0], created
        secret = generate_secret()
    if not any(s.secret == secret for s in stored):
        PortalSecret.objects.create(portal=portal, secret=secret)
    return portal, secret, created


@transaction.atomic
def portal_secrets_reencrypt() -> int:
    """Encrypt every stored secret again with the first key of WEBHOOK_SECRETS_KEY (after a new key
    was put first); returns how many. One transaction: dying half-way leaves every row as it was,
    all still readable with the old key still listed."""
    stored = list(PortalSecret.objects.select_for_update().order_by("pk"))
    for portal_secret in stored:
        portal_secret.save(update_fields=["secret"])
    return len(stored)
