"""A message that no longer makes sense is not sent (issue 17, item 7): the claim checks it, in the
same statement. A confirmation or update of a registration cancelled since, a reminder whose event
has started: `cancelled`, with the reason in last_error_code; a replay of one is refused, saying why."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from apps.notifications.errors import ProviderTransientError
from apps.notifications.models import Notification
from apps.notifications.services import notification_replay, notification_send
from apps.registrations.models import Registration
from apps.registrations.services import registration_apply
from tests.support.smtp import SmtpServer
from tests.support.story import deliver
from tests.support.webhooks import encode, payload

pytestmark = pytest.mark.django_db

Make = Callable[..., Notification]


def send(notification: Notification) -> str:
    return notification_send(notification_id=str(notification.id)).outcome


def cancel(registration: Registration) -> None:
    Registration.objects.filter(id=registration.id).update(status=Registration.Status.CANCELLED)


@pytest.mark.parametrize("kind", ["confirmation", "update", "reminder_24h", "reminder_1h"])
def test_nothing_but_the_cancellation_is_sent_for_a_cancelled_registration(
    kind: str,
    email_via_smtp: SmtpServer,
    make_notification: Make,
    make_registration: Callable[..., Registration],
) -> None:
    registration = make_registration(event_starts_at=timezone.now() + dt.timedelta(days=3))
    stale = make_notification(kind=kind, registration=registration)
    cancellation = make_notification(kind="cancellation", registration=registration)
    cancel(registration)
    assert send(stale) == "cancelled"
    assert send(cancellation) == "sent"
    assert email_via_smtp.ids() == [str(cancellation.id)]
    stale.refresh_from_db()
    assert (stale.status, stale.last_error_code, stale.attempts) == ("cancelled", "registration_cancelled", 0)
    assert "cancelled" in stale.last_error_message
    assert send(stale) == "skipped"


@pytest.mark.parametrize("kind", ["reminder_24h", "reminder_1h"])
def test_a_reminder_after_its_event_started_is_not_sent(
    kind: str,
    email_via_smtp: SmtpServer,
    make_notification: Make,
    make_registration: Callable[..., Registration],
) -> None:
    registration = make_registration(event_starts_at=timezone.now() - dt.timedelta(minutes=5))
    reminder = make_notification(kind=kind, registration=registration)
    assert send(reminder) == "cancelled"
    assert email_via_smtp.ids() == []
    reminder.refresh_from_db()
    assert (reminder.status, reminder.last_error_code) == ("cancelled", "event_started")
    assert reminder.last_error_message == "Not sent: the event has already started."


def test_a_reminder_before_its_event_and_a_confirmation_of_an_active_registration_are_sent(
    email_via_smtp: SmtpServer,
    make_notification: Make,
    make_registration: Callable[..., Registration],
) -> None:
    registration = make_registration(event_starts_at=timezone.now() + dt.timedelta(minutes=30))
    reminder = make_notification(kind="reminder_1h", registration=registration)
    confirmation = make_notification(kind="confirmation", registration=registration)
    assert (send(reminder), send(confirmation)) == ("sent", "sent")
    assert sorted(email_via_smtp.ids()) == sorted([str(reminder.id), str(confirmation.id)])


def test_a_confirmation_held_back_by_a_mail_outage_is_not_sent_after_the_cancellation(
    portal,
    email_via_smtp: SmtpServer,
) -> None:
    starts = (timezone.now() + dt.timedelta(days=7)).isoformat()
    # Given a registration whose confirmation could not be sent: the mail server is down
    created = deliver(portal, encode(payload("R-77", phone=None, starts_at=starts)), "msg_created")
    registration_apply(event_id=str(created["event_id"]), message_id="m-created")
    confirmation = Notification.objects.get(registration__external_id="R-77", kind="confirmation")
    email_via_smtp.stop()
    with pytest.raises(ProviderTransientError):
        send(confirmation)
    # ... and then cancelled, its cancellation sent once the server is back
    cancelled = deliver(
        portal,
        encode(payload("R-77", event_type="registration.cancelled", phone=None, starts_at=starts)),
        "msg_cancelled",
    )
    registration_apply(event_id=str(cancelled["event_id"]), message_id="m-cancelled")
    cancellation = Notification.objects.get(registration__external_id="R-77", kind="cancellation")
    email_via_smtp.restart()
    assert send(cancellation) == "sent"
    # When the confirmation's retry comes
    assert send(confirmation) == "cancelled"
    # Then the attendee's last (and only) e-mail is the cancellation
    assert email_via_smtp.ids() == [str(cancellation.id)]
    confirmation.refresh_from_db()
    assert (confirmation.status, confirmation.last_error_code) == ("cancelled", "registration_cancelled")


@pytest.fixture
def replayer(db):
    return get_user_model().objects.create_user("support", password="x", is_staff=True)


def test_a_replay_of_a_stale_notification_is_refused_saying_why(
    replayer,
    email_via_smtp: SmtpServer,
    make_notification: Make,
    make_registration: Callable[..., Registration],
) -> None:
    registration = make_registration(event_starts_at=timezone.now() - dt.timedelta(hours=1))
    reminder = make_notification(kind="reminder_1h", registration=registration)
    confirmation = make_notification(kind="confirmation", registration=registration)
    Notification.objects.filter(id__in=[reminder.id, confirmation.id]).update(status="dead")
    cancel(registration)
    for notification, reason in ((reminder, "registration_cancelled"), (confirmation, "registration_cancelled")):
        result = notification_replay(notification_id=notification.id, reason="mail fixed", user=replayer)
        assert (bool(result), result.refused) == (False, reason)
        assert "cancelled" in result.message
        notification.refresh_from_db()
        assert notification.status == "dead" and not notification.replays.exists()
    Registration.objects.filter(id=registration.id).update(status=Registration.Status.ACTIVE)
    result = notification_replay(notification_id=reminder.id, reason="mail fixed", user=replayer)
    assert (bool(result), result.refused, result.message) == (
        False,
        "event_started",
        "Not replayed: the event has already started.",
    )
    assert notification_replay(notification_id=confirmation.id, reason="mail fixed", user=replayer)


def test_replay_notifications_prints_why_it_refused(
    email_via_smtp: SmtpServer,
    make_notification: Make,
    make_registration: Callable[..., Registration],
) -> None:
    registration = make_registration(event_starts_at=timezone.now() + dt.timedelta(days=1))
    confirmation = make_notification(kind="confirmation", registration=registration)
    Notification.objects.filter(id=confirmation.id).update(status="dead", last_error_code="smtp_permanent")
    cancel(registration)
    out = io.StringIO()
    call_command("replay_notifications", "--id", str(confirmation.id), "--reason", "ticket 1", stdout=out)
    assert f"refused {confirmation.id}" in out.getvalue()
    assert "registration_cancelled" in out.getvalue()
    assert "queued 0 notification(s)" in out.getvalue()
