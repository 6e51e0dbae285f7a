from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.notifications import template_store
from apps.notifications.breakers import circuit_breaker_cache_clear
from apps.notifications.channels import reset_providers
from apps.webhooks.services import portal_create
from tests.support import webhooks
from tests.support.sms import SmsApi
from tests.support.smtp import SmtpServer


@pytest.fixture
def portal(db):
    portal, _, _ = portal_create(slug="pretix", name="Pretix", secret=webhooks.SECRET)
    return portal


@pytest.fixture
def staff(client: Client) -> Client:
    """The admin, logged in as a superuser (tests/status overrides it with a view-only support user)."""
    client.force_login(User.objects.create_superuser("support", "support@example.org", "pw"))
    return client


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def sms_api() -> Iterator[SmsApi]:
    api = SmsApi().start()
    yield api
    api.stop()


@pytest.fixture(autouse=True)
def _fresh_providers() -> Iterator[None]:
    """Providers and closed breakers are cached per process; tests change both between cases."""
    reset_providers()
    circuit_breaker_cache_clear()
    yield
    reset_providers()
    circuit_breaker_cache_clear()


@pytest.fixture(autouse=True)
def _fresh_message_templates() -> None:
    """Edited wording is kept per process (apps/notifications/template_store.py); each test's
    database starts without any."""
    template_store.reset()


@pytest.fixture(autouse=True)
def _fresh_portal_cache() -> Iterator[None]:
    """The intake caches portals per process for a few seconds; tests change them between requests."""
    from apps.webhooks.selectors import portal_cache_clear

    portal_cache_clear()
    yield
    portal_cache_clear()
