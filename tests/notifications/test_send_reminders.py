"""send_reminders: windows, channels, idempotence, concurrent runs."""

from __future__ import annotations

import datetime as dt
import io
import threading
from collections.abc import Callable

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from apps.notifications.models import Notification
from apps.outbox.models import OutboxMessage
from apps.registrations.models import Registration
from apps.registrations.reminders import reminders_create

MakeRegistration = Callable[..., Registration]


def starting_in(make_registration: MakeRegistration, delta: dt.timedelta, **fields: object) -> Registration:
    return make_registration(event_starts_at=timezone.now() + delta, **fields)


def reminders() -> set[tuple[str, str, str]]:
    return {
        (n.registration.external_id, n.kind, n.channel)
        for n in Notification.objects.filter(kind__startswith="reminder").select_related("registration")
    }


@pytest.mark.django_db
def test_each_window_gets_its_reminder(make_registration: MakeRegistration) -> None:
    hours = dt.timedelta(hours=1)
    soon = starting_in(make_registration, 0.5 * hours, phone="")
    tomorrow = starting_in(make_registration, 20 * hours, phone="")
    edge_1h = starting_in(make_registration, 1 * hours - dt.timedelta(seconds=30), phone="")
    starting_in(make_registration, 25 * hours)  # too far
    starting_in(make_registration, -1 * hours)  # already started
    starting_in(make_registration, 2 * hours, status="cancelled")  # cancelled: nothing

    created = reminders_create()

    assert reminders() == {
        (soon.external_id, "reminder_1h", "email"),
        (tomorrow.external_id, "reminder_24h", "email"),
        (edge_1h.external_id, "reminder_1h", "email"),
    }
    assert {kind: len(items) for kind, items in created.items()} == {"reminder_24h": 1, "reminder_1h": 2}
    reminder = Notification.objects.get(registration=tomorrow)
    assert OutboxMessage.objects.filter(kwargs__notification_id=str(reminder.id)).count() == 1
    assert reminder.context["event_name"] == "PyData Berlin" and reminder.context["status"] == "active"


@pytest.mark.django_db
def test_sms_only_for_the_one_hour_reminder_when_a_phone_is_given_and_sms_is_configured(
    settings, make_registration: MakeRegistration
) -> None:
    settings.SMS_API_URL = "http://127.0.0.1:9"
    soon = starting_in(make_registration, dt.timedelta(minutes=30))
    tomorrow = starting_in(make_registration, dt.timedelta(hours=20))
    no_phone = starting_in(make_registration, dt.timedelta(minutes=30), phone="")
    reminders_create()
    assert reminders() == {
        (soon.external_id, "reminder_1h", "email"),
        (soon.external_id, "reminder_1h", "sms"),
        (tomorrow.external_id, "reminder_24h", "email"),
        (no_phone.external_id, "reminder_1h", "email"),
    }
    assert Notification.objects.get(registration=soon, channel="sms").recipient == "+4915112345678"


@pytest.mark.django_db
def test_windows_are_configurable(settings, make_registration: MakeRegistration) -> None:
    settings.REMINDER_1H_BEFORE_SECONDS = 2 * 3600
    settings.REMINDER_24H_BEFORE_SECONDS = 48 * 3600
    in_90_min = starting_in(make_registration, dt.timedelta(minutes=90), phone="")
    in_40_h = starting_in(make_registration, dt.timedelta(hours=40), phone="")
    reminders_create()
    assert reminders() == {
        (in_90_min.external_id, "reminder_1h", "email"),
        (in_40_h.external_id, "reminder_24h", "email"),
    }


@pytest.mark.django_db
def test_running_twice_creates_nothing_new(make_registration: MakeRegistration) -> None:
    starting_in(make_registration, dt.timedelta(minutes=30))
    starting_in(make_registration, dt.timedelta(hours=5))
    out = io.StringIO()
    call_command("send_reminders", stdout=out)
    assert "reminder_24h: created 1 notification(s)" in out.getvalue()
    assert "reminder_1h: created 1 notification(s)" in out.getvalue()
    outbox_rows = OutboxMessage.objects.count()

    again = io.StringIO()
    call_command("send_reminders", "--list", stdout=again)
    assert "reminder_24h: created 0" in again.getvalue() and "reminder_1h: created 0" in again.getvalue()
    assert Notification.objects.count() == 2 and OutboxMessage.objects.count() == outbox_rows


@pytest.mark.django_db
def test_a_24h_reminder_already_sent_does_not_stop_the_1h_one(make_registration: MakeRegistration) -> None:
    registration = starting_in(make_registration, dt.timedelta(hours=5), phone="")
    reminders_create()
    reminders_create(now=timezone.now() + dt.timedelta(hours=4, minutes=30))
    assert reminders() == {
        (registration.external_id, "reminder_24h", "email"),
        (registration.external_id, "reminder_1h", "email"),
    }


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_create_each_reminder_once(make_registration: MakeRegistration) -> None:
    for minutes in range(0, 600, 20):
        starting_in(make_registration, dt.timedelta(minutes=minutes + 5), phone="")
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            reminders_create()
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert Notification.objects.count() == 30 == len(reminders())
    assert OutboxMessage.objects.count() == 30
