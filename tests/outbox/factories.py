"""Rows of the outbox for tests: `OutboxMessageFactory(available_at=..., published_at=...)`."""

from __future__ import annotations

import factory
from factory.django import DjangoModelFactory

from apps.outbox.models import OutboxMessage
from apps.webhooks.apply_actor import APPLY_ACTOR


class OutboxMessageFactory(DjangoModelFactory[OutboxMessage]):
    """An unpublished message for the apply actor (its names taken from where they are declared),
    due now."""

    class Meta:
        model = OutboxMessage

    actor_name = APPLY_ACTOR["actor_name"]
    queue_name = APPLY_ACTOR["queue_name"]
    kwargs = factory.LazyFunction(dict)
