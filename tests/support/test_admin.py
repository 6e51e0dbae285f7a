"""Support staff's view: every list and detail page renders; dead notifications can be replayed."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.notifications.models import Notification
from apps.outbox.models import OutboxMessage
from apps.webhooks.models import Portal
from tests.notifications.factories import NotificationFactory
from tests.registrations.factories import RegistrationFactory
from tests.support.webhooks import encode, payload, signed_headers

pytestmark = pytest.mark.django_db


@pytest.fixture
def dead_notification(portal: Portal) -> Notification:
    registration = RegistrationFactory(portal=portal, external_id="R-1", email="ada@example.org")
    return NotificationFactory(
        registration=registration,
        kind="confirmation",
        channel="email",
        status="dead",
        recipient="ada@example.org",
        context={},
        attempts=3,
        last_error_code="smtp_permanent",
    )


def test_every_admin_page_renders(staff: Client, portal: Portal, dead_notification: Notification) -> None:
    body = encode(payload())
    staff.post(
        "/webhooks/pretix/",
        data=body,
        content_type="application/json",
        headers={k: v for k, v in signed_headers(body).items() if k != "content-type"},
    )
    for url in [
        "/admin/webhooks/portal/",
        "/admin/webhooks/webhookevent/",
        "/admin/outbox/outboxmessage/",
        "/admin/registrations/registration/",
        "/admin/notifications/notification/",
        "/admin/notifications/notificationattempt/",
        f"/admin/notifications/notification/{dead_notification.id}/change/",
        f"/admin/registrations/registration/{dead_notification.registration_id}/change/",
        "/admin/notifications/notification/?status__exact=dead&channel__exact=email",
        "/admin/notifications/notificationreplay/",
        "/admin/error-codes/",
        f"/admin/registrations/registration/{dead_notification.registration_id}/story/",
    ]:
        assert staff.get(url).status_code == 200, url


def test_event_admin_is_read_only(staff: Client) -> None:
    assert staff.get("/admin/webhooks/webhookevent/add/").status_code == 403


def test_replay_action_asks_for_a_reason_then_requeues_a_dead_notification(
    staff: Client, dead_notification: Notification
) -> None:
    # Deliberately changed: the action no longer replays at once; it shows a confirmation page first.
    selection = {"action": "replay_notifications", "_selected_action": [str(dead_notification.id)]}
    confirmation = staff.post("/admin/notifications/notification/", selection)
    assert confirmation.status_code == 200 and b"Reason (required)" in confirmation.content
    response = staff.post("/admin/notifications/notification/", {**selection, "confirm": "yes", "reason": "fixed"})
    assert response.status_code == 302
    dead_notification.refresh_from_db()
    assert dead_notification.status == "pending"
    assert OutboxMessage.objects.filter(kwargs={"notification_id": str(dead_notification.id)}).count() == 1
    assert dead_notification.replays.get().reason == "fixed"
