"""Rows of the webhooks app for tests: `PortalFactory()`, `WebhookEventFactory(portal=..., status=...)`."""

from __future__ import annotations

import uuid

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from apps.webhooks.models import Portal, WebhookEvent


class PortalFactory(DjangoModelFactory[Portal]):
    class Meta:
        model = Portal

    slug = factory.Sequence(lambda n: f"portal-{n}")
    name = factory.LazyAttribute(lambda portal: portal.slug.title())


class WebhookEventFactory(DjangoModelFactory[WebhookEvent]):
    """An accepted `registration.created` delivery with an empty body, received now."""

    class Meta:
        model = WebhookEvent

    portal = factory.SubFactory(PortalFactory)
    delivery_id = factory.LazyFunction(lambda: f"msg_{uuid.uuid4().hex}")
    type = "registration.created"
    status = WebhookEvent.Status.ACCEPTED
    raw_body = b"{}"
    payload = factory.LazyFunction(dict)
    received_at = factory.LazyFunction(timezone.now)
