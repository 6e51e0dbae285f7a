"""Suppressions in the admin (issue 19 items 1, 7): search, add by hand, lift with the permission and a
reason (audited); the report history on the notification's and the registration's pages; a replay
refused while the address is suppressed, and sent to the corrected address after the lift."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client

from apps.notifications.delivery import (
    suppression_add,
    suppression_lift,
)
from apps.notifications.models import Notification, NotificationReplay, Suppression
from apps.notifications.services import notification_replay
from apps.outbox.models import OutboxMessage
from apps.registrations.models import Registration
from apps.webhooks.models import Portal
from tests.notifications.factories import NotificationFactory, SuppressionFactory, record_permanent_bounce
from tests.registrations.factories import RegistrationFactory

pytestmark = pytest.mark.django_db

LIST = "/admin/notifications/suppression/"
REPLAY = "/admin/notifications/notification/replay/"


def staff_client(username: str, *permissions: str) -> tuple[Client, User]:
    user = User.objects.create_user(username, f"{username}@example.org", "pw", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client, user


@pytest.fixture
def registration(portal: Portal) -> Registration:
    return RegistrationFactory(portal=portal, email="Ada@Example.org", first_name="Ada")


def bounced_notification(registration: Registration) -> Notification:
    notification = NotificationFactory(
        registration=registration, status="sent", attempts=1, provider_message_id="<m1@ep>"
    )
    record_permanent_bounce(
        notification,
        diagnostic="smtp; 550 5.1.1 User unknown",
        details={"Action": "failed", "Remote-MTA": "dns; mx.example.org"},
    )
    notification.refresh_from_db()
    return notification


def test_view_and_lift_permissions_lift_with_a_reason_and_the_lift_is_audited(registration: Registration) -> None:
    bounced_notification(registration)
    suppression = Suppression.objects.get()
    client, user = staff_client("lifter", "view_suppression", "lift_suppression")
    # The list: searchable as the attendee spells the address, showing what caused it
    page = client.get(LIST, {"q": " ADA@example.org "}).content.decode()
    assert "ada@example.org" in page and "lift_suppressions" in page and f"{suppression.notification_id}" in page
    # The action asks for a reason first
    selected = {"action": "lift_suppressions", "_selected_action": [str(suppression.id)]}
    confirmation = client.post(LIST, selected).content.decode()
    assert 'id="lift-form"' in confirmation and "5.1.1" in confirmation
    assert "required" in client.post(LIST, {**selected, "confirm": "yes", "reason": " "}).content.decode()
    assert Suppression.objects.get().lifted_at is None
    response = client.post(LIST, {**selected, "confirm": "yes", "reason": "mailbox fixed, phoned Ada"}, follow=True)
    assert "Lifted 1 suppression(s)" in response.content.decode()
    suppression.refresh_from_db()
    assert (suppression.lifted_by, suppression.lift_reason) == (user, "mailbox fixed, phoned Ada")
    assert suppression.lifted_at is not None
    # The row stays, read-only, with the lift on it
    detail = client.get(f"{LIST}{suppression.id}/change/").content.decode()
    assert "mailbox fixed, phoned Ada" in detail and "lifter" in detail


def test_view_permission_alone_cannot_lift(registration: Registration) -> None:
    bounced_notification(registration)
    suppression = Suppression.objects.get()
    client, _ = staff_client("viewer", "view_suppression")
    assert "lift_suppressions" not in client.get(LIST).content.decode()
    client.post(
        LIST,
        {"action": "lift_suppressions", "_selected_action": [str(suppression.id)], "confirm": "yes", "reason": "x"},
    )
    assert Suppression.objects.get().lifted_at is None
    assert client.get(f"{LIST}add/").status_code == 403


def test_staff_add_a_suppression_by_hand(registration: Registration) -> None:
    client, user = staff_client("adder", "view_suppression", "add_suppression")
    response = client.post(
        f"{LIST}add/", {"channel": "email", "address": " Grace@Example.ORG ", "note": "asked by phone"}, follow=True
    )
    assert response.status_code == 200
    suppression = Suppression.objects.get()
    assert (suppression.address, suppression.reason, suppression.created_by, suppression.source) == (
        "grace@example.org",
        "manual",
        user,
        "admin",
    )
    again = client.post(f"{LIST}add/", {"channel": "email", "address": "GRACE@example.org", "note": ""})
    assert "Already suppressed since" in again.content.decode()
    bad = client.post(f"{LIST}add/", {"channel": "sms", "address": "0151 1234", "note": ""})
    assert "E.164" in bad.content.decode()
    assert Suppression.objects.count() == 1
    # Never edited, never deleted: lifting keeps the history
    assert client.post(f"{LIST}{suppression.id}/delete/", {"post": "yes"}).status_code == 403


def test_the_report_history_shows_on_the_notification_and_the_story(registration: Registration) -> None:
    notification = bounced_notification(registration)
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.org", "pw"))
    page = client.get(f"/admin/notifications/notification/{notification.id}/change/").content.decode()
    assert "Delivery reports (after sent)" in page
    assert "smtp; 550 5.1.1 User unknown" in page and "mx.example.org" in page
    story = client.get(f"/admin/registrations/registration/{registration.pk}/story/").content.decode()
    assert "confirmation/email: bounced reported (dsn)" in story and "Remote-MTA: dns; mx.example.org" in story


def test_a_replay_says_why_it_will_not_send_until_lifted_then_goes_to_the_corrected_address(
    registration: Registration,
) -> None:
    notification = bounced_notification(registration)
    client, user = staff_client(
        "support", "view_notification", "replay_notification", "view_suppression", "lift_suppression"
    )
    response = client.post(
        f"{REPLAY}?notification={notification.id}", {"confirm": "yes", "reason": "she says it works"}, follow=True
    )
    page = response.content.decode()
    assert "address_suppressed" in page and "It will not send until the suppression is lifted" in page
    assert NotificationReplay.objects.count() == 0
    # When the portal corrects the address (an update webhook), the replay goes to the new one: it is
    # not suppressed, so no lift is needed
    Registration.objects.filter(pk=registration.pk).update(email="ada.lovelace@example.org")
    assert notification_replay(notification_id=notification.id, reason="address corrected", user=user)
    notification.refresh_from_db()
    assert (notification.status, notification.recipient) == ("pending", "ada.lovelace@example.org")
    assert OutboxMessage.objects.filter(kwargs={"notification_id": str(notification.id)}).exists()


def test_a_replay_after_the_lift_sends_again(registration: Registration) -> None:
    notification = bounced_notification(registration)
    _, user = staff_client("support", "lift_suppression")
    refused = notification_replay(notification_id=notification.id, reason="retry", user=user)
    assert (refused.queued, refused.refused) == (False, "address_suppressed")
    suppression_lift(suppression_id=Suppression.objects.get().id, user=user, reason="fixed")
    assert notification_replay(notification_id=notification.id, reason="retry", user=user).queued
    # And a suppressed SMS number keeps its own suppression: channels do not mix
    SuppressionFactory(channel="sms", address="+4915112345678", reason="opted_out")
    assert suppression_add(channel="email", address="ada@example.org", reason="manual")[1] is True


def test_the_replay_command_says_why_it_refuses_a_suppressed_address(registration: Registration) -> None:
    notification = bounced_notification(registration)
    out = io.StringIO()
    call_command("replay_notifications", "--id", str(notification.id), "--reason", "ticket 4711", stdout=out)
    printed = out.getvalue()
    assert f"refused {notification.id}" in printed and "address_suppressed" in printed
    assert "It will not send until the suppression is lifted" in printed
    assert "queued 0 notification(s)" in printed
    notification.refresh_from_db()
    assert notification.status == "bounced"


def test_who_added_and_who_lifted_outlive_their_user_accounts(registration: Registration) -> None:
    """The audit says who, even after the staff member's account was deleted (the user columns go null)."""
    client, adder = staff_client("adder", "view_suppression", "add_suppression")
    client.post(f"{LIST}add/", {"channel": "email", "address": "grace@example.org", "note": "asked by phone"})
    _, lifter = staff_client("lifter", "lift_suppression")
    suppression = Suppression.objects.get()
    suppression_lift(suppression_id=suppression.id, user=lifter, reason="she asked again")
    adder.delete()
    lifter.delete()
    suppression.refresh_from_db()
    assert (suppression.created_by, suppression.lifted_by) == (None, None)
    assert (suppression.created_by_name, suppression.lifted_by_name) == ("adder", "lifter")
    viewer, _ = staff_client("viewer", "view_suppression")
    detail = viewer.get(f"{LIST}{suppression.id}/change/").content.decode()
    assert "adder" in detail and "lifter" in detail
