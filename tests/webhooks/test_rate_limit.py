"""The per-portal rate limit comes before the signature check (issue 17 item 10): an unsigned flood
is limited like signed traffic, so it cannot make the intake compute an HMAC per active secret for
every request without end."""

from __future__ import annotations

import time

import pytest
from django.test import Client

from apps.webhooks.models import Portal, RateWindow
from apps.webhooks.selectors import portal_cache_clear
from apps.webhooks.services import portal_secret_rotate
from tests.support.webhooks import encode, payload

pytestmark = pytest.mark.django_db

LIMIT = 5
FLOOD = 20


def wait_clear_of_a_minute_boundary() -> None:
    """The limit counts per calendar minute: start the flood where it fits in one."""
    while time.gmtime().tm_sec >= 50:
        time.sleep(0.5)


def test_an_unsigned_flood_is_rate_limited_with_retry_after(client: Client, portal: Portal) -> None:
    # Given a rate-limited portal with several active secrets (each one an HMAC per checked request)
    Portal.objects.filter(pk=portal.pk).update(rate_limit_per_minute=LIMIT)
    for _ in range(3):
        portal_secret_rotate(portal=portal)
    portal_cache_clear()
    wait_clear_of_a_minute_boundary()
    # When 20 requests arrive without signature headers (and with a forged one)
    responses = []
    for index in range(FLOOD):
        headers = (
            {}
            if index % 2
            else {
                "webhook-id": f"msg_{index}",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1,Zm9yZ2Vk",
            }
        )
        responses.append(
            client.post("/webhooks/pretix/", data=encode(payload()), content_type="application/json", headers=headers)
        )
    codes = [(r.status_code, r.json()["error"]["code"]) for r in responses]
    # Then the first LIMIT are checked and refused, and every later one is refused before any check
    assert codes[:LIMIT] == [(401, "invalid_signature")] * LIMIT
    assert codes[LIMIT:] == [(429, "rate_limited")] * (FLOOD - LIMIT)
    for response in responses[LIMIT:]:
        assert 0 < int(response["Retry-After"]) <= 60
    assert sum(window.count for window in RateWindow.objects.filter(portal=portal)) == FLOOD
