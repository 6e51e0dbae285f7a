"""Every 4xx is logged once (issue 21): the webhook view's own `webhook.rejected`, not also Django's
`django.request` warning (which our formatter would tag `library_warning`); other 4xx keep Django's line."""

from __future__ import annotations

import logging

import pytest
from django.test import Client


@pytest.mark.django_db
def test_a_rejected_webhook_is_logged_once(client: Client, portal, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(20):
        response = client.post("/webhooks/pretix/", data=b"{}", content_type="application/json")
        assert response.status_code == 401
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 20, [record.getMessage() for record in warnings]
    assert all(record.name == "webhooks" for record in warnings)
    assert not [record for record in caplog.records if record.name == "django.request"]


@pytest.mark.django_db
def test_another_4xx_is_still_logged_by_django_once(client: Client, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    assert client.get("/no-such-page/").status_code == 404
    assert [record.name for record in caplog.records if record.levelno >= logging.WARNING] == ["django.request"]
