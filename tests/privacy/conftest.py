"""Webhook events as the intake stores them, at a chosen time (an INSERT is what the trigger allows)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from apps.registrations.services import registration_apply
from apps.webhooks.models import Portal, WebhookEvent
from tests.webhooks.factories import WebhookEventFactory

MakeEvent = Callable[..., WebhookEvent]


@pytest.fixture
def make_event(portal: Portal) -> MakeEvent:
    def make(
        body: dict[str, Any],
        *,
        received_at: dt.datetime,
        apply: bool = True,
        status: str = WebhookEvent.Status.ACCEPTED,
        errors: Any = None,
    ) -> WebhookEvent:
        event = WebhookEventFactory(
            portal=portal,
            delivery_id=f"msg_{uuid.uuid4().hex}",
            type=body.get("type", ""),
            status=status,
            raw_body=json.dumps(body).encode(),
            payload=body,
            errors=errors,
            received_at=received_at,
        )
        if apply:
            assert registration_apply(event_id=str(event.id), message_id=uuid.uuid4().hex).outcome == "applied"
        return event

    return make
