"""Update e-mails are keyed by the event that caused them, and the last one states the final state
(issue 17 item 4). Counted where they arrive: a real SMTP server, or Django's mail outbox (the
property test, for speed)."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

import pytest
from django.core import mail
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.notifications.channels import reset_providers
from apps.notifications.models import Notification
from apps.notifications.services import notification_send
from apps.registrations import projection
from apps.registrations.models import Registration
from apps.registrations.services import registration_apply
from apps.webhooks.models import Portal
from apps.webhooks.parsing import parse_delivery
from apps.webhooks.services import webhook_event_record
from tests.support.smtp import SmtpServer
from tests.support.webhooks import encode, payload

pytestmark = pytest.mark.django_db

BASE = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)
_deliveries = itertools.count()


@pytest.fixture
def smtp(settings: Any, smtp_server: SmtpServer) -> SmtpServer:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_server.port
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.SMS_API_URL = ""
    reset_providers()
    return smtp_server


def version(
    registration_id: str,
    minute: int,
    *,
    venue: str,
    event_type: str = "registration.updated",
    starts_at: str = "2026-12-03T09:00:00+01:00",
) -> dict[str, Any]:
    return payload(
        registration_id,
        event_type=event_type,
        venue=venue,
        phone=None,
        starts_at=starts_at,
        timestamp=(BASE + dt.timedelta(minutes=minute)).isoformat(),
    )


def deliver(portal: Portal, body: dict[str, Any]) -> None:
    """Stored as the intake stores it (parsed, normalised), then applied."""
    raw = encode(body)
    parsed = parse_delivery(raw)
    assert parsed.errors is None, parsed.errors
    recorded = webhook_event_record(
        portal=portal,
        delivery_id=f"d-{next(_deliveries)}",
        event_type=parsed.event_type,
        raw_body=raw,
        payload=parsed.payload,
    )
    assert registration_apply(event_id=str(recorded.event_id), message_id=uuid.uuid4().hex).outcome == "applied"


def send_waiting(registration_id: str) -> None:
    """What the workers would do next: send every notification still waiting, oldest first."""
    for notification in Notification.objects.filter(
        registration__external_id=registration_id, status__in=("pending", "retrying")
    ).order_by("created_at"):
        notification_send(notification_id=str(notification.id))


def arrived_updates(smtp: SmtpServer) -> list[str]:
    """The update e-mails the SMTP server accepted, in order: the venue each names."""
    venues = []
    for message in smtp.messages:
        notification = Notification.objects.get(id=message["X-Eventplatform-Notification-Id"])
        if notification.kind == "update":
            body = message.get_body(preferencelist=("plain",)).get_content()
            venues.append(next(line.removeprefix("Where: ") for line in body.splitlines() if line.startswith("Where:")))
    return venues


def test_alpha_bravo_alpha_bravo_sends_three_updates_the_last_naming_bravo(portal: Portal, smtp: SmtpServer) -> None:
    deliver(portal, version("R-ABAB", 0, venue="Alpha", event_type="registration.created"))
    send_waiting("R-ABAB")
    for minute, venue in enumerate(["Bravo", "Alpha", "Bravo"], start=1):
        deliver(portal, version("R-ABAB", minute, venue=venue))
        send_waiting("R-ABAB")
    assert arrived_updates(smtp) == ["Bravo", "Alpha", "Bravo"]
    assert len(smtp.messages) == 4, "the confirmation and three updates, each once"


def test_the_same_start_written_with_another_offset_sends_nothing(portal: Portal, smtp: SmtpServer) -> None:
    deliver(
        portal,
        version("R-OFFSET", 0, venue="Alpha", event_type="registration.created", starts_at="2026-12-03T09:00:00+01:00"),
    )
    deliver(portal, version("R-OFFSET", 1, venue="Alpha", starts_at="2026-12-03T08:00:00Z"))
    deliver(portal, version("R-OFFSET", 2, venue="Alpha", starts_at="2026-12-03T10:00:00+02:00"))
    send_waiting("R-OFFSET")
    assert arrived_updates(smtp) == [] and len(smtp.messages) == 1
    assert not Notification.objects.filter(kind="update").exists()


def test_the_projection_compares_instants_not_how_they_are_written() -> None:
    """Events stored before the intake normalised carry the portal's own offsets."""

    def event(minute: int, event_type: str, starts_at: str) -> projection.DomainEvent:
        data = {
            "event_name": "PyData",
            "event_starts_at": starts_at,
            "event_venue": "bcc",
            "first_name": "Ada",
            "last_name": "L",
            "email": "ada@example.org",
        }
        return projection.DomainEvent(
            type=event_type, occurred_at=(BASE + dt.timedelta(minutes=minute)).isoformat(), data=data
        )

    events = [
        event(0, "created", "2026-12-03T09:00:00+01:00"),
        event(1, "updated", "2026-12-03T08:00:00Z"),
        event(2, "updated", "2026-12-03T08:00:00+00:00"),
    ]
    assert [kind for kind, _, _ in projection.desired_notifications(events)] == ["confirmation"]


def test_an_older_update_arriving_after_a_newer_one_sends_nothing_stale(portal: Portal, smtp: SmtpServer) -> None:
    deliver(portal, version("R-LATE", 0, venue="Alpha", event_type="registration.created"))
    deliver(portal, version("R-LATE", 2, venue="Charlie"))  # the newer update arrives first
    send_waiting("R-LATE")
    deliver(portal, version("R-LATE", 1, venue="Bravo"))  # the older one, late
    send_waiting("R-LATE")
    assert arrived_updates(smtp) == ["Charlie"]
    assert Registration.objects.get(external_id="R-LATE").event_venue == "Charlie"


def test_a_pending_update_is_superseded_by_a_newer_one(portal: Portal, smtp: SmtpServer) -> None:
    deliver(portal, version("R-SUPER", 0, venue="Alpha", event_type="registration.created"))
    send_waiting("R-SUPER")
    deliver(portal, version("R-SUPER", 1, venue="Bravo"))  # not sent yet (the mail server is slow)
    deliver(portal, version("R-SUPER", 2, venue="Charlie"))
    older = Notification.objects.get(kind="update", context__event_venue="Bravo")
    assert (older.status, older.last_error_code) == ("cancelled", "superseded")
    assert "newest update" in older.last_error_message
    send_waiting("R-SUPER")
    assert arrived_updates(smtp) == ["Charlie"]


def test_a_change_back_before_the_update_went_out_sends_nothing(portal: Portal, smtp: SmtpServer) -> None:
    deliver(portal, version("R-BACK", 0, venue="Alpha", event_type="registration.created"))
    send_waiting("R-BACK")
    deliver(portal, version("R-BACK", 1, venue="Bravo"))
    deliver(portal, version("R-BACK", 2, venue="Alpha"))  # back to what the confirmation said
    send_waiting("R-BACK")
    assert arrived_updates(smtp) == []
    assert Notification.objects.get(kind="update").last_error_code == "superseded"


def test_an_update_superseded_then_wanted_again_is_created_anew(portal: Portal, smtp: SmtpServer) -> None:
    """Found by the property below: u4 is the last change, then not (u2 arrives: u4 repeats it),
    then again (u3 arrives between them). Its update was superseded meanwhile; it comes back as a
    new row, and the attendee hears the final venue."""
    venues = ["Alpha", "Alpha", "Bravo", "Alpha", "Bravo"]
    bodies = [
        version(
            "R-AGAIN", minute, venue=venue, event_type="registration.created" if minute == 0 else "registration.updated"
        )
        for minute, venue in enumerate(venues)
    ]
    for index in (0, 1, 4, 2, 3):
        deliver(portal, bodies[index])
    send_waiting("R-AGAIN")
    assert arrived_updates(smtp) == ["Bravo"]


VENUES = ["Alpha", "Bravo", "Charlie"]
_registrations = itertools.count()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_delivery_order_ends_with_the_last_update_stating_the_final_state(
    portal: Portal, data: st.DataObject
) -> None:
    """Property: created, then 1-4 updates each naming a venue (repeats and returns allowed), delivered
    in any order, the workers sending whatever waits at random moments in between. The last update
    e-mail that arrives (if any) names the final venue; and when the final venue differs from the
    one the confirmation named, an update naming it arrives. Left out: cancellations (the
    cancellation e-mail, not an update, is then the last word) and duplicates (test_registration_apply)."""
    registration_id = f"R-PROP-{next(_registrations)}"
    venues = data.draw(st.lists(st.sampled_from(VENUES), min_size=2, max_size=5), label="venues")
    bodies = [
        version(
            registration_id,
            minute,
            venue=venue,
            event_type="registration.created" if minute == 0 else "registration.updated",
        )
        for minute, venue in enumerate(venues)
    ]
    order = data.draw(st.permutations(range(len(bodies))), label="order")
    sends = data.draw(st.lists(st.booleans(), min_size=len(bodies), max_size=len(bodies)), label="send after")
    mail.outbox.clear()

    for index, send_now in zip(order, sends, strict=True):
        deliver(portal, bodies[index])
        if send_now:
            send_waiting(registration_id)
    send_waiting(registration_id)

    kinds = {str(n.id): n.kind for n in Notification.objects.filter(registration__external_id=registration_id)}
    arrived = [
        (kinds[message.extra_headers["X-Eventplatform-Notification-Id"]], message.body) for message in mail.outbox
    ]
    updates = [body for kind, body in arrived if kind == "update"]
    final = venues[-1]
    if updates:
        assert f"Where: {final}" in updates[-1]
    confirmation = next(body for kind, body in arrived if kind == "confirmation")
    if f"Where: {final}" not in confirmation:
        assert updates, "the attendee was told the venue changed"
    assert Registration.objects.get(external_id=registration_id).event_venue == final
