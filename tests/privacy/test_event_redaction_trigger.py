"""The immutability trigger lets exactly one update through — a redaction asked for by this
transaction — and nothing else; DELETE stays refused (migration webhooks 0003)."""

from __future__ import annotations

import json

import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from apps.webhooks.models import WebhookEvent
from apps.webhooks.redaction import Redaction, webhook_events_redact
from tests.support.webhooks import payload

pytestmark = pytest.mark.django_db(transaction=True)

REDACTED = json.dumps({"redacted": "test"})


@pytest.fixture
def event(make_event) -> WebhookEvent:
    return make_event(payload("R-T"), received_at=timezone.now(), apply=False)


def refused(sql: str, params: list[object], *, flag: bool) -> bool:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if flag:
                cursor.execute("SELECT set_config('eventplatform.redaction', 'on', true)")
            cursor.execute(sql, params)
    except DatabaseError as error:
        assert "immutable" in str(error)
        return True
    return False


@pytest.mark.parametrize(
    ("sql", "extra"),
    [
        ("UPDATE webhooks_webhookevent SET type = 'registration.cancelled' WHERE id = %s", []),
        (
            "UPDATE webhooks_webhookevent SET raw_body = '', payload = %s::jsonb, status = 'rejected' WHERE id = %s",
            [REDACTED],
        ),
        (
            "UPDATE webhooks_webhookevent SET raw_body = '', payload = %s::jsonb, delivery_id = 'other' WHERE id = %s",
            [REDACTED],
        ),
        (
            "UPDATE webhooks_webhookevent SET raw_body = '', payload = %s::jsonb WHERE id = %s",
            [json.dumps({"type": "registration.cancelled"})],
        ),  # a rewrite, not a redaction
        ("UPDATE webhooks_webhookevent SET raw_body = 'x', payload = %s::jsonb WHERE id = %s", [REDACTED]),
        (
            "UPDATE webhooks_webhookevent SET raw_body = '', payload = %s::jsonb, errors = '{\"x\": 1}' WHERE id = %s",
            [REDACTED],
        ),
        ("DELETE FROM webhooks_webhookevent WHERE id = %s", []),
    ],
)
def test_anything_but_a_redaction_is_refused_even_with_the_flag(
    event: WebhookEvent, sql: str, extra: list[object]
) -> None:
    assert refused(sql, [*extra, event.id], flag=True)
    event.refresh_from_db()
    assert bytes(event.raw_body) and event.payload["type"] == "registration.created"


def test_a_redaction_without_the_transactions_flag_is_refused(event: WebhookEvent) -> None:
    assert refused(
        "UPDATE webhooks_webhookevent SET raw_body = '', payload = %s::jsonb WHERE id = %s",
        [REDACTED, event.id],
        flag=False,
    )


def test_the_redaction_service_passes_and_the_flag_ends_with_its_transaction(event: WebhookEvent) -> None:
    assert webhook_events_redact(redactions=[Redaction(event_id=event.id, payload={"redacted": "test"})]) == 1
    event.refresh_from_db()
    assert bytes(event.raw_body) == b"" and event.payload == {"redacted": "test"}
    # The next transaction on the same connection has no flag: a second redaction by hand is refused.
    assert refused(
        "UPDATE webhooks_webhookevent SET raw_body = '', payload = %s::jsonb WHERE id = %s",
        [json.dumps({"redacted": "again"}), event.id],
        flag=False,
    )
    assert refused("DELETE FROM webhooks_webhookevent WHERE id = %s", [event.id], flag=True)
