"""CONTRACT sections 7 and 8, black-box through the admin's URLs: the audit of replays and lifts cannot
be changed or deleted by anyone (a superuser included), signing secrets are never shown in full, and
/admin/status/ is for staff only."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client

from apps.notifications.delivery import suppression_add, suppression_lift
from apps.notifications.models import Notification, NotificationReplay, Suppression
from apps.notifications.services import notification_replay
from apps.registrations.models import Registration
from apps.webhooks.models import Portal

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser() -> tuple[Client, User]:
    user = User.objects.create_superuser("root", "root@example.org", "pw-for-tests-1")
    client = Client()
    client.force_login(user)
    return client, user


def test_no_one_can_change_or_delete_the_audit_of_a_replay_or_a_lift(superuser, portal: Portal) -> None:
    client, user = superuser
    registration = Registration.objects.create(portal=portal, external_id="R-1", email="ada@example.org")
    dead = Notification.objects.create(
        registration=registration,
        kind="confirmation",
        channel="email",
        status="dead",
        recipient="ada@example.org",
        context={},
        attempts=3,
    )
    assert notification_replay(notification_id=dead.id, reason="address fixed", user=user).queued
    suppression, _ = suppression_add(channel="email", address="ada@example.org", reason="bounced")
    suppression_lift(suppression_id=suppression.id, user=user, reason="mailbox fixed")
    replay = NotificationReplay.objects.get()
    for base, pk in (
        ("/admin/notifications/notificationreplay/", replay.pk),
        ("/admin/notifications/suppression/", suppression.pk),
    ):
        assert client.post(f"{base}{pk}/delete/", {"post": "yes"}).status_code == 403
        # The change page is read-only: a POST that would rewrite the reason changes nothing
        client.post(f"{base}{pk}/change/", {"reason": "rewritten", "lift_reason": "rewritten"})
        client.post(base, {"action": "delete_selected", "_selected_action": [str(pk)], "post": "yes"})
    replay.refresh_from_db()
    suppression.refresh_from_db()
    assert (replay.reason, replay.actor) == ("address fixed", "root")
    assert (suppression.lift_reason, suppression.lifted_by) == ("mailbox fixed", user)
    assert NotificationReplay.objects.count() == Suppression.objects.count() == 1


def test_a_portals_signing_secret_is_never_shown_in_full_in_the_admin(superuser) -> None:
    client, _ = superuser
    out = io.StringIO()
    call_command("create_portal", "acme", stdout=out)
    secret = re.search(r"whsec_\S+", out.getvalue()).group(0)
    portal = Portal.objects.get(slug="acme")
    key = secret.removeprefix("whsec_")
    pages = [
        "/admin/webhooks/portal/",
        f"/admin/webhooks/portal/{portal.pk}/change/",
        "/admin/webhooks/portalsecret/",
    ]
    pages += [f"/admin/webhooks/portalsecret/{pk}/change/" for pk in portal.secrets.values_list("pk", flat=True)]
    for page in pages:
        response = client.get(page)
        assert response.status_code in (200, 403, 404), page
        assert key not in response.content.decode(), page


def test_the_status_page_sends_anyone_not_staff_to_the_login_page(client: Client) -> None:
    assert client.get("/admin/status/")["Location"].startswith("/admin/login/")
    user = User.objects.create_user("attendee", "a@example.org", "pw-for-tests-1")  # logged in, not staff
    client.force_login(user)
    response = client.get("/admin/status/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
