"""A `starts_at` without a UTC offset is read in the event's `timezone` (issue 17 item 8): 09:00 in
Berlin stays 09:00 in Berlin; a local time that does not exist there is refused with a field error."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.test import Client

from apps.notifications.models import Notification
from apps.notifications.rendering import render
from apps.registrations.models import Registration
from apps.registrations.services import registration_apply
from apps.webhooks.models import Portal, WebhookEvent
from tests.support.webhooks import encode, payload, signed_headers

pytestmark = pytest.mark.django_db


def post(client: Client, body: dict):
    raw = encode(body)
    headers = {k: v for k, v in signed_headers(raw).items() if k != "content-type"}
    return client.post("/webhooks/pretix/", data=raw, content_type="application/json", headers=headers)


@pytest.mark.parametrize(
    ("starts_at", "utc"),
    [
        ("2026-12-03T09:00:00", dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC)),  # winter, UTC+1
        ("2026-07-03T09:00:00", dt.datetime(2026, 7, 3, 7, 0, tzinfo=dt.UTC)),  # summer, UTC+2
        ("2026-12-03T09:00:00+01:00", dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC)),  # an offset is kept
        ("2026-12-03T08:00:00Z", dt.datetime(2026, 12, 3, 8, 0, tzinfo=dt.UTC)),
    ],
)
def test_starts_at_without_offset_is_read_in_the_event_timezone(
    client: Client, portal: Portal, starts_at: str, utc: dt.datetime
) -> None:
    response = post(client, payload("R-TZ", starts_at=starts_at))
    assert response.status_code == 202, response.content
    event = WebhookEvent.objects.get(pk=response.json()["event_id"])
    assert event.payload["data"]["event"]["starts_at"] == utc.isoformat()
    assert registration_apply(event_id=str(event.id), message_id=uuid.uuid4().hex).outcome == "applied"

    registration = Registration.objects.get(external_id="R-TZ")
    assert registration.event_starts_at == utc
    # The confirmation says 09:00 (Berlin) for 09:00 Berlin (or its UTC equivalent)
    confirmation = Notification.objects.get(registration=registration, kind="confirmation", channel="email")
    expected_local = utc.astimezone(dt.timezone(dt.timedelta(hours=1 if utc.month == 12 else 2)))
    assert (
        f"{expected_local:%H:%M} (Europe/Berlin)"
        in render(kind="confirmation", channel="email", context=confirmation.context).text
    )


def test_a_local_time_in_the_daylight_saving_gap_is_422_with_a_field_error(client: Client, portal: Portal) -> None:
    # 2026-03-29 02:30 does not exist in Berlin (clocks jump from 02:00 to 03:00)
    response = post(client, payload("R-GAP", starts_at="2026-03-29T02:30:00"))
    assert response.status_code == 422
    fields = response.json()["error"]["details"]["fields"]
    assert "does not exist in Europe/Berlin" in fields["data"]["event"]["starts_at"][0]
    assert WebhookEvent.objects.get().status == "rejected", "kept for staff, not lost"
