"""Rows of the registrations app for tests: `RegistrationFactory(portal=..., email=...)`."""

from __future__ import annotations

import factory
from factory.django import DjangoModelFactory

from apps.registrations.models import Registration
from tests.webhooks.factories import PortalFactory


class RegistrationFactory(DjangoModelFactory[Registration]):
    """An active registration with a fresh external id; contact details only where a test gives them."""

    class Meta:
        model = Registration

    portal = factory.SubFactory(PortalFactory)
    external_id = factory.Sequence(lambda n: f"R-{n}")
