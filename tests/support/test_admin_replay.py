"""Replay in the admin: permission, confirmation with a required reason, audit (CONTRACT section 7)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from apps.notifications.models import Notification, NotificationReplay
from apps.outbox.models import OutboxMessage
from apps.registrations.models import Registration
from apps.webhooks.models import Portal
from tests.notifications.factories import NotificationFactory
from tests.registrations.factories import RegistrationFactory

pytestmark = pytest.mark.django_db

LIST = "/admin/notifications/notification/"
REPLAY = "/admin/notifications/notification/replay/"


def staff_client(username: str, *permissions: str) -> Client:
    user = User.objects.create_user(username, f"{username}@example.org", "pw", is_staff=True)
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer() -> Client:
    return staff_client("viewer", "view_notification", "view_registration", "view_notificationreplay")


@pytest.fixture
def replayer() -> Client:
    return staff_client(
        "replayer", "view_notification", "view_registration", "view_notificationreplay", "replay_notification"
    )


def make(
    registration: Registration, status: str, *, kind: str = "confirmation", channel: str = "email", error_code: str = ""
) -> Notification:
    return NotificationFactory(
        registration=registration,
        kind=kind,
        channel=channel,
        status=status,
        recipient="ada@example.org",
        context={},
        attempts=3,
        last_error_code=error_code,
    )


@pytest.fixture
def registration(portal: Portal) -> Registration:
    return RegistrationFactory(portal=portal, external_id="R-1", email="ada@example.org")


def queued(notification: Notification) -> int:
    return OutboxMessage.objects.filter(kwargs={"notification_id": str(notification.id)}).count()


def test_view_permission_alone_cannot_replay(viewer: Client, registration: Registration) -> None:
    dead = make(registration, "dead", error_code="smtp_permanent")
    page = viewer.get(LIST).content.decode()
    assert "replay_notifications" not in page and "replay-matching-link" not in page
    assert "replay-link" not in viewer.get(f"{LIST}{dead.id}/change/").content.decode()

    # A hand-made POST of the action is refused (Django runs only actions the user may use).
    viewer.post(
        LIST,
        {"action": "replay_notifications", "_selected_action": [str(dead.id)], "confirm": "yes", "reason": "sneaky"},
    )
    assert viewer.get(f"{REPLAY}?notification={dead.id}").status_code == 403
    assert viewer.post(f"{REPLAY}?notification={dead.id}", {"confirm": "yes", "reason": "x"}).status_code == 403
    dead.refresh_from_db()
    assert (dead.status, queued(dead), NotificationReplay.objects.count()) == ("dead", 0, 0)


def test_single_replay_from_the_notification_page_is_audited(replayer: Client, registration: Registration) -> None:
    dead = make(registration, "dead", error_code="smtp_permanent")
    assert f"replay/?notification={dead.id}" in replayer.get(f"{LIST}{dead.id}/change/").content.decode()

    confirmation = replayer.get(f"{REPLAY}?notification={dead.id}").content.decode()
    assert 'id="replay-count">1<' in confirmation and "confirmation" in confirmation and "email" in confirmation

    # No reason: the page comes back with an error, nothing is replayed.
    again = replayer.post(f"{REPLAY}?notification={dead.id}", {"confirm": "yes", "reason": "  "})
    assert again.status_code == 200 and "This field is required" in again.content.decode()
    assert queued(dead) == 0

    done = replayer.post(f"{REPLAY}?notification={dead.id}", {"confirm": "yes", "reason": "address fixed"})
    assert done.status_code == 302 and done["Location"].endswith(f"{dead.id}/change/")
    dead.refresh_from_db()
    audit = dead.replays.get()
    assert (dead.status, queued(dead)) == ("pending", 1)
    assert (
        audit.actor_type,
        audit.actor,
        audit.user.username,
        audit.reason,
        audit.previous_status,
        audit.previous_error_code,
    ) == ("user", "replayer", "replayer", "address fixed", "dead", "smtp_permanent")
    page = replayer.get(f"{LIST}{dead.id}/change/").content.decode()
    assert "address fixed" in page and "replayer" in page
    assert "address fixed" in replayer.get("/admin/notifications/notificationreplay/").content.decode()


def test_sent_is_replayed_only_when_named_and_ticked(replayer: Client, registration: Registration) -> None:
    sent = make(registration, "sent")
    url = f"{REPLAY}?notification={sent.id}"
    assert "Also send again the ones already sent" in replayer.get(url).content.decode()
    refused = replayer.post(url, {"confirm": "yes", "reason": "spam folder"}, follow=True).content.decode()
    sent.refresh_from_db()
    assert (sent.status, queued(sent)) == ("sent", 0)
    # Refused, saying what to tick; not a green "Queued 0"
    assert "Nothing was replayed" in refused and "Tick" in refused and "Queued 0" not in refused
    replayer.post(url, {"confirm": "yes", "reason": "spam folder", "include_sent": "on"})
    sent.refresh_from_db()
    assert (sent.status, queued(sent), sent.replays.get().previous_status) == ("pending", 1, "sent")


def test_replay_all_matching_takes_the_filters_and_only_dead_ones(replayer: Client, registration: Registration) -> None:
    dead_email = [
        make(registration, "dead", kind=kind, error_code="smtp_permanent")
        for kind in ("confirmation", "update", "cancellation")
    ]
    dead_sms = make(registration, "dead", channel="sms", error_code="sms_permanent")
    sent_email = make(registration, "sent", kind="reminder_24h")
    filters = "channel__exact=email"
    assert f"replay/?{filters}" in replayer.get(f"{LIST}?{filters}").content.decode()

    confirmation = replayer.get(f"{REPLAY}?{filters}").content.decode()
    assert 'id="replay-count">3<' in confirmation
    assert "1 other(s) are left alone" in confirmation  # the sent reminder
    response = replayer.post(f"{REPLAY}?{filters}", {"confirm": "yes", "reason": "smtp relay back"})
    assert response.status_code == 302 and filters in response["Location"]
    assert [queued(n) for n in [*dead_email, dead_sms, sent_email]] == [1, 1, 1, 0, 0]
    assert NotificationReplay.objects.filter(reason="smtp relay back").count() == 3


def test_select_all_in_the_action_goes_to_the_filtered_replay_page(
    replayer: Client, registration: Registration
) -> None:
    dead = make(registration, "dead")
    response = replayer.post(
        f"{LIST}?status__exact=dead",
        {"action": "replay_notifications", "_selected_action": [str(dead.id)], "select_across": "1"},
    )
    assert response.status_code == 302 and response["Location"] == f"{REPLAY}?status__exact=dead"


def test_selected_rows_confirmation_counts_kinds_and_channels(replayer: Client, registration: Registration) -> None:
    chosen = [make(registration, "dead", channel=channel) for channel in ("email", "sms")]
    pending = make(registration, "pending", kind="update")
    selection = {"action": "replay_notifications", "_selected_action": [str(n.id) for n in [*chosen, pending]]}
    confirmation = replayer.post(LIST, selection).content.decode()
    assert 'id="replay-count">2<' in confirmation and "1 other(s) are left alone" in confirmation
    replayer.post(LIST, {**selection, "confirm": "yes", "reason": "provider outage over"})
    assert [queued(n) for n in [*chosen, pending]] == [1, 1, 0]


def test_the_audit_shows_on_the_notification_page_to_anyone_who_sees_the_notification(
    replayer: Client, registration: Registration
) -> None:
    dead = make(registration, "dead")
    replayer.post(f"{REPLAY}?notification={dead.id}", {"confirm": "yes", "reason": "bounced, address fixed"})
    page = staff_client("notifications-only", "view_notification").get(f"{LIST}{dead.id}/change/").content.decode()
    assert "bounced, address fixed" in page and "replayer" in page


def test_invalid_filters_replay_nothing(replayer: Client, registration: Registration) -> None:
    dead = make(registration, "dead")
    response = replayer.post(f"{REPLAY}?no_such_field=1", {"confirm": "yes", "reason": "x"})
    assert response.status_code == 302 and queued(dead) == 0


def test_a_replay_the_send_would_cancel_is_refused_with_the_reason_shown(
    replayer: Client,
    registration: Registration,
) -> None:
    # Given a dead confirmation of a registration cancelled since
    dead = make(registration, "dead", error_code="smtp_transient")
    Registration.objects.filter(id=registration.id).update(status="cancelled")
    # When support replays it
    page = replayer.post(
        f"{REPLAY}?notification={dead.id}", {"confirm": "yes", "reason": "mail fixed"}, follow=True
    ).content.decode()
    # Then it is not queued, and the page says why (a warning, no green "Queued 0")
    assert "Queued 0" not in page
    assert "Not queued: 1 notification(s), registration_cancelled: Not replayed: the registration was cancelled" in page
    dead.refresh_from_db()
    assert (dead.status, queued(dead), dead.replays.count()) == ("dead", 0, 0)
