"""registration_apply: duplicates and reordering end in the clean sequence's state and notifications."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.notifications.models import Notification
from apps.outbox.models import OutboxMessage
from apps.registrations import projection
from apps.registrations.models import Registration
from apps.registrations.services import registration_apply
from apps.webhooks.models import Portal, WebhookEvent
from tests.notifications.factories import NotificationFactory
from tests.support.webhooks import payload
from tests.webhooks.factories import WebhookEventFactory

BASE = dt.datetime(2026, 11, 27, 10, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Delivery:
    event: int  # index into the portal's history
    how: str = "first"  # first | same_message (broker redelivery) | new_message (relay republish) | new_delivery


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A portal's history of one registration: created, 0-3 updates, maybe cancelled last.

    Each update either changes what the attendee sees to something new (and maybe their contact
    details too) or re-sends the previous data under a new timestamp. Two things are held fixed
    because the property cannot hold for them, a notification once sent not being revocable:
    nothing follows a cancellation (an update stamped after it but delivered before it has already
    sent its `update`), and no update returns to a state the attendee saw before (A -> B -> A: an
    update to A is sent only when B was sent before A arrived; nothing is sent in this test, see
    test_update_notifications.py for histories with sends in between).
    """

    def version(minute: int, event_type: str) -> dict[str, Any]:
        return payload(
            "R-PROP",
            event_type=event_type,
            phone=draw(st.sampled_from([None, "+4915112345678", "+4915199999999"])),
            email=draw(st.sampled_from(["ada@example.org", "ada@work.example"])),
            first_name=f"Ada{minute}",  # a new name: a state the attendee has not seen
            event_name=draw(st.sampled_from(["PyData Berlin", "DjangoCon"])),
            starts_at=draw(st.sampled_from(["2026-12-03T09:00:00+01:00", "2026-12-04T09:00:00+01:00"])),
            venue=draw(st.sampled_from([None, "bcc"])),
            role=draw(st.sampled_from(["attendee", "speaker"])),
            timestamp=(BASE + dt.timedelta(minutes=minute)).isoformat(),
        )

    def resend(previous: dict[str, Any], minute: int) -> dict[str, Any]:
        return dict(previous, type="registration.updated", timestamp=(BASE + dt.timedelta(minutes=minute)).isoformat())

    events = [version(0, "registration.created")]
    for minute in range(1, draw(st.integers(0, 3)) + 1):
        events.append(resend(events[-1], minute) if draw(st.booleans()) else version(minute, "registration.updated"))
    if draw(st.booleans()):
        cancelled = dict(
            events[-1], type="registration.cancelled", timestamp=(BASE + dt.timedelta(minutes=len(events))).isoformat()
        )
        events.append(cancelled)
    return events


@st.composite
def messy_deliveries(draw: st.DrawFn, events: int) -> list[Delivery]:
    """Every event at least once, plus duplicates of three sorts, in any order."""
    extra = draw(
        st.lists(
            st.tuples(st.integers(0, events - 1), st.sampled_from(["same_message", "new_message", "new_delivery"])),
            max_size=5,
        )
    )
    deliveries = [Delivery(n) for n in range(events)] + [Delivery(n, how) for n, how in extra]
    order = draw(st.permutations(deliveries))
    # A duplicate delivered before its original is just the original arriving first.
    seen: set[int] = set()
    result = []
    for delivery in order:
        result.append(delivery if delivery.event in seen else Delivery(delivery.event))
        seen.add(delivery.event)
    return result


def outcome(portal: Portal, events: list[dict[str, Any]], deliveries: list[Delivery]) -> tuple[Any, ...]:
    """Apply the deliveries in a transaction that is rolled back; return what they produced."""
    with transaction.atomic():
        records: dict[int, tuple[WebhookEvent, str]] = {}
        for delivery in deliveries:
            if delivery.how in ("first", "new_delivery"):
                body = events[delivery.event]
                event = WebhookEventFactory(
                    portal=portal,
                    delivery_id=f"msg_{uuid.uuid4().hex}",
                    type=body["type"],
                    status="accepted",
                    raw_body=b"",
                    payload=body,
                    received_at=timezone.now(),
                )
                records[delivery.event] = (event, str(uuid.uuid4()))
            event, message_id = records[delivery.event]
            if delivery.how == "new_message":
                message_id = str(uuid.uuid4())
            registration_apply(event_id=str(event.id), message_id=message_id)
        registration = Registration.objects.get(portal=portal, external_id="R-PROP")
        state = {field: getattr(registration, field) for field in (*projection.DATA_FIELDS, "status", "last_event_at")}
        # What will be delivered: an update superseded before it was sent (a newer one, or a
        # cancellation, came first in this arrival order) is `cancelled` and goes nowhere.
        going = Notification.objects.filter(registration=registration).exclude(status="cancelled")
        notifications = sorted((n.kind, n.channel, n.dedupe_key, n.status, n.recipient) for n in going)
        going_ids = {str(n.id) for n in going}
        sends = sum(
            1
            for kwargs in OutboxMessage.objects.filter(actor_name="notification_send").values_list("kwargs", flat=True)
            if kwargs["notification_id"] in going_ids
        )
        transaction.set_rollback(True)
    return state, notifications, sends


@pytest.mark.django_db
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_duplicates_and_reordering_end_like_the_clean_sequence(
    portal: Portal, django_settings: Any, data: st.DataObject
) -> None:
    django_settings.SMS_API_URL = "http://sms.invalid"  # SMS channels take part
    events = data.draw(histories(), label="history")
    messy = data.draw(messy_deliveries(len(events)), label="deliveries")
    clean = [Delivery(n) for n in range(len(events))]
    assert outcome(portal, events, messy) == outcome(portal, events, clean)


@pytest.fixture
def django_settings(settings: Any) -> Any:
    """pytest-django's `settings` under a name that does not clash with hypothesis' `settings`."""
    return settings


@pytest.mark.django_db
def test_a_cancellation_cancels_pending_reminders_but_not_sent_ones(portal: Portal) -> None:
    created = WebhookEventFactory(
        portal=portal,
        delivery_id="msg_1",
        type="registration.created",
        status="accepted",
        raw_body=b"",
        received_at=timezone.now(),
        payload=payload("R-1", phone=None, timestamp=BASE.isoformat()),
    )
    registration_apply(event_id=str(created.id), message_id="m1")
    registration = Registration.objects.get(external_id="R-1")
    for kind, status in (("reminder_24h", "sent"), ("reminder_1h", "pending")):
        NotificationFactory(
            registration=registration,
            kind=kind,
            channel="email",
            status=status,
            recipient="ada@example.org",
            context={},
        )
    cancel_body = payload(
        "R-1", event_type="registration.cancelled", phone=None, timestamp=(BASE + dt.timedelta(minutes=1)).isoformat()
    )
    cancelled = WebhookEventFactory(
        portal=portal,
        delivery_id="msg_2",
        type="registration.cancelled",
        status="accepted",
        raw_body=b"",
        received_at=timezone.now(),
        payload=cancel_body,
    )
    registration_apply(event_id=str(cancelled.id), message_id="m2")

    statuses = dict(Notification.objects.filter(registration=registration).values_list("kind", "status"))
    assert statuses == {
        "confirmation": "pending",
        "cancellation": "pending",
        "reminder_24h": "sent",
        "reminder_1h": "cancelled",
    }
