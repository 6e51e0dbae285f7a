"""notification_report_record and the Suppression services (apps/notifications/delivery.py):
statuses move forward only, every report is history, permanent bounces and complaints suppress."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.notifications.delivery import (
    DeliveryReport,
    ReportOutcome,
    notification_report_record,
    notification_reports_apply_pending,
    suppression_active,
    suppression_add,
    suppression_lift,
)
from apps.notifications.models import Notification, NotificationReport, Suppression

pytestmark = pytest.mark.django_db

Status = Notification.Status


def report(
    outcome: ReportOutcome, *, permanent: bool = False, code: str = "", key: str = "", **extra: Any
) -> DeliveryReport:
    return DeliveryReport(
        source=extra.pop("source", "dsn"),
        outcome=outcome,
        permanent=permanent,
        status_code=code,
        diagnostic=extra.pop("diagnostic", f"smtp; 550 {code} User unknown" if code else ""),
        reported_at=timezone.now(),
        details=extra,
        dedupe_key=key,
    )


def bounce(key: str = "") -> DeliveryReport:
    return report(ReportOutcome.BOUNCED, permanent=True, code="5.1.1", key=key, Action="failed", Status="5.1.1")


def mark_sent(notification: Notification, provider_message_id: str = "") -> Notification:
    """What the sending worker's `sent` write leaves (sending.py), without a provider."""
    Notification.objects.filter(id=notification.id).update(
        status=Status.SENT, sent_at=timezone.now(), provider_message_id=provider_message_id or f"<{notification.id}@ep>"
    )
    notification.refresh_from_db()
    return notification


@pytest.fixture
def sent(make_notification: Callable[..., Notification]) -> Callable[..., Notification]:
    def make(**kwargs: Any) -> Notification:
        return mark_sent(make_notification(**kwargs))

    return make


def test_a_delivered_report_moves_sent_to_delivered_and_is_kept(sent: Callable[..., Notification]) -> None:
    notification = sent()
    result = notification_report_record(
        report=report(ReportOutcome.DELIVERED, code="2.0.0", Action="delivered"), notification_id=notification.id
    )
    assert (result.found, result.status, result.changed, result.suppressed) == (True, "delivered", True, False)
    notification.refresh_from_db()
    assert notification.status == Status.DELIVERED
    row = NotificationReport.objects.get(notification=notification)
    assert (row.source, row.outcome, row.status_code, row.applied) == ("dsn", "delivered", "2.0.0", True)
    assert row.details == {"Action": "delivered"}


def test_a_permanent_bounce_ends_bounced_keeps_the_remote_reason_and_suppresses(
    sent: Callable[..., Notification],
) -> None:
    notification = sent(email="Ada.Lovelace@Example.ORG")
    result = notification_report_record(report=bounce(), notification_id=notification.id)
    assert (result.status, result.changed, result.suppressed) == ("bounced", True, True)
    notification.refresh_from_db()
    assert (notification.status, notification.last_error_code) == (Status.BOUNCED, "5.1.1")
    assert notification.last_error_message == "smtp; 550 5.1.1 User unknown"
    suppression = Suppression.objects.get()
    # Lower-cased whole: the mailbox bounces whatever the spelling of its local part.
    assert (suppression.channel, suppression.address, suppression.reason) == (
        "email",
        "ada.lovelace@example.org",
        "bounced",
    )
    assert (suppression.notification_id, suppression.source, suppression.lifted_at) == (notification.id, "dsn", None)
    assert "5.1.1" in suppression.note
    assert suppression_active(channel="email", address="ADA.LOVELACE@example.org") == suppression


def test_a_transient_bounce_ends_bounced_without_suppressing(sent: Callable[..., Notification]) -> None:
    notification = sent()
    result = notification_report_record(
        report=report(ReportOutcome.BOUNCED, permanent=False, code="4.2.2"), notification_id=notification.id
    )
    assert (result.status, result.suppressed) == ("bounced", False)
    assert not Suppression.objects.exists()


def test_a_complaint_after_delivered_ends_complained_and_suppresses(sent: Callable[..., Notification]) -> None:
    notification = sent()
    notification_report_record(report=report(ReportOutcome.DELIVERED), notification_id=notification.id)
    result = notification_report_record(
        report=report(ReportOutcome.COMPLAINED, code="abuse", source="arf", **{"Feedback-Type": "abuse"}),
        notification_id=notification.id,
    )
    assert (result.status, result.changed, result.suppressed) == ("complained", True, True)
    assert Suppression.objects.get().reason == Suppression.Reason.COMPLAINED


@pytest.mark.parametrize(
    ("first", "late", "end"),
    [
        (ReportOutcome.DELIVERED, ReportOutcome.DELAYED, "delivered"),
        (ReportOutcome.BOUNCED, ReportOutcome.DELIVERED, "bounced"),
        (ReportOutcome.COMPLAINED, ReportOutcome.BOUNCED, "complained"),
        (ReportOutcome.COMPLAINED, ReportOutcome.DELIVERED, "complained"),
    ],
)
def test_a_late_report_never_moves_the_status_back_but_is_kept(
    sent: Callable[..., Notification], first: ReportOutcome, late: ReportOutcome, end: str
) -> None:
    notification = sent()
    notification_report_record(report=report(first, code="x"), notification_id=notification.id)
    result = notification_report_record(report=report(late, code="y"), notification_id=notification.id)
    assert (result.status, result.changed) == (end, False)
    notification.refresh_from_db()
    assert notification.status == end
    assert list(notification.reports.values_list("outcome", flat=True)) == [first, late]


def test_a_delay_report_is_history_only(sent: Callable[..., Notification]) -> None:
    notification = sent()
    result = notification_report_record(
        report=report(ReportOutcome.DELAYED, code="4.4.7"), notification_id=notification.id
    )
    assert (result.status, result.changed) == ("sent", False)
    assert notification.reports.count() == 1


def test_the_same_report_twice_is_one_history_row(sent: Callable[..., Notification]) -> None:
    notification = sent()
    for _ in range(3):  # an MTA retrying after our "250" was lost
        notification_report_record(report=bounce(key="dsn:<abc@mta>:ada"), notification_id=notification.id)
    assert notification.reports.count() == 1
    assert Suppression.objects.count() == 1


def test_a_report_is_found_by_the_provider_message_id_within_its_channel(
    make_notification: Callable[..., Notification],
) -> None:
    sms = mark_sent(make_notification(channel="sms"), provider_message_id="SM123")
    result = notification_report_record(
        report=report(ReportOutcome.BOUNCED, permanent=True, code="30005", source="sms_callback"),
        provider_message_id="SM123",
        channel="sms",
    )
    assert (result.found, result.status, result.suppressed) == (True, "bounced", True)
    assert Suppression.objects.get().address == sms.recipient == "+4915112345678"
    assert (
        notification_report_record(
            report=report(ReportOutcome.DELIVERED), provider_message_id="SM123", channel="email"
        ).found
        is False
    )


def test_a_report_for_an_unknown_message_changes_nothing(sent: Callable[..., Notification]) -> None:
    sent()
    result = notification_report_record(report=bounce(), provider_message_id="SM-unknown")
    assert result.found is False
    assert not NotificationReport.objects.exists()
    assert not Suppression.objects.exists()


@pytest.mark.parametrize("status", [Status.DEAD, Status.CANCELLED, Status.SUPPRESSED])
def test_a_report_about_a_message_that_never_went_out_is_history_only(
    make_notification: Callable[..., Notification], status: str
) -> None:
    notification = make_notification()
    Notification.objects.filter(id=notification.id).update(status=status)
    result = notification_report_record(report=bounce(), notification_id=notification.id)
    assert (result.status, result.changed, result.suppressed) == (status, False, False)
    assert notification.reports.get().applied is True
    assert not Suppression.objects.exists()


@pytest.mark.parametrize("status", [Status.PENDING, Status.RETRYING, Status.SENDING])
def test_a_report_that_outruns_our_sent_waits_and_the_scheduler_applies_it(
    make_notification: Callable[..., Notification], status: str
) -> None:
    # Given an SMS callback arriving before the worker's `sent` write committed
    notification = make_notification()
    Notification.objects.filter(id=notification.id).update(status=status)
    result = notification_report_record(report=bounce(), notification_id=notification.id)
    assert (result.status, result.changed) == (status, False)
    assert notification.reports.get().applied is False
    # Then the scheduler leaves it while the send is not recorded
    assert notification_reports_apply_pending() == {"reports_applied": 0}
    # And applies it once it is
    mark_sent(notification)
    assert notification_reports_apply_pending() == {"reports_applied": 1}
    notification.refresh_from_db()
    assert notification.status == Status.BOUNCED
    assert notification.reports.get().applied is True
    assert Suppression.objects.get().notification_id == notification.id
    assert notification_reports_apply_pending() == {"reports_applied": 0}


def test_suppression_add_keeps_one_active_row_and_the_first_cause(sent: Callable[..., Notification]) -> None:
    notification = sent()
    first, created = suppression_add(
        channel="email", address="ada@example.org", reason="bounced", notification_id=notification.id, source="dsn"
    )
    again, created_again = suppression_add(channel="email", address="ADA@example.org", reason="manual")
    assert (created, created_again, again) == (True, False, first)
    assert again.reason == "bounced"


def lifter(*, perm: bool) -> User:
    user = User.objects.create_user("support", password="x", is_staff=True)
    if perm:
        user.user_permissions.add(Permission.objects.get(codename="lift_suppression"))
    return User.objects.get(id=user.id)  # a fresh instance: permissions are cached per instance


def test_lifting_needs_the_permission_and_a_reason_and_is_audited() -> None:
    suppression, _ = suppression_add(channel="email", address="ada@example.org", reason="bounced")
    with pytest.raises(PermissionDenied):
        suppression_lift(suppression_id=suppression.id, user=lifter(perm=False), reason="fixed")
    user = User.objects.get(username="support")
    user.user_permissions.add(Permission.objects.get(codename="lift_suppression"))
    user = User.objects.get(id=user.id)
    with pytest.raises(ValueError, match="reason"):
        suppression_lift(suppression_id=suppression.id, user=user, reason="  ")
    assert suppression_lift(suppression_id=suppression.id, user=user, reason="mailbox fixed, phoned Ada") is True
    assert suppression_lift(suppression_id=suppression.id, user=user, reason="twice") is False
    suppression.refresh_from_db()
    assert suppression.lifted_by == user
    assert suppression.lift_reason == "mailbox fixed, phoned Ada"
    assert suppression.lifted_at is not None
    assert suppression_active(channel="email", address="ada@example.org") is None
    # Lifted rows stay as history; the address can be suppressed again.
    _, created = suppression_add(channel="email", address="ada@example.org", reason="complained")
    assert created and Suppression.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_many_concurrent_reports_about_one_address_make_one_suppression(
    make_registration: Callable[..., Any], make_notification: Callable[..., Notification]
) -> None:
    # Given 12 notifications to one address, sent, and their bounces arriving at once on 12 connections
    notifications = [mark_sent(make_notification()) for _ in range(12)]
    barrier = threading.Barrier(len(notifications))
    errors: list[BaseException] = []

    def deliver(notification: Notification) -> None:
        try:
            barrier.wait()
            notification_report_record(report=bounce(key="k"), notification_id=notification.id)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver, args=(n,)) for n in notifications]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert Suppression.objects.filter(lifted_at__isnull=True).count() == 1
    assert Notification.objects.filter(status=Status.BOUNCED).count() == 12
    assert NotificationReport.objects.count() == 12


# --- any order of reports ends in the same status

OUTCOMES = st.sampled_from(list(ReportOutcome))


@pytest.fixture
def django_settings(settings: Any) -> Any:
    return settings


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_order_of_reports_ends_in_the_same_status_and_history(
    make_notification: Callable[..., Notification], data: st.DataObject
) -> None:
    """Reports about one notification, each maybe delivered twice (same dedupe key), in any order,
    some arriving before our `sent` is recorded: the end (status, history rows, suppression) is the
    one of the reports applied in their natural order after `sent`. Left out: reports about a
    notification that never went out (dead, cancelled, suppressed), history only by design."""
    reports = data.draw(
        st.lists(st.tuples(OUTCOMES, st.booleans()), min_size=1, max_size=6), label="reports (outcome, permanent)"
    )
    arrivals = data.draw(
        st.lists(st.sampled_from(range(len(reports))), min_size=len(reports), max_size=2 * len(reports)).filter(
            lambda order: set(order) == set(range(len(reports)))
        ),
        label="arrival order, duplicates included",
    )
    sent_after = data.draw(st.integers(min_value=0, max_value=len(arrivals)), label="reports before our `sent`")

    def run(order: list[int], before_sent: int) -> tuple[str, list[tuple[str, bool]], bool]:
        with transaction.atomic():
            notification = make_notification()
            for position, index in enumerate(order):
                if position == before_sent:
                    mark_sent(notification)
                outcome, permanent = reports[index]
                notification_report_record(
                    report=report(outcome, permanent=permanent, code=str(index), key=f"r{index}"),
                    notification_id=notification.id,
                )
            if before_sent >= len(order):
                mark_sent(notification)
            notification_reports_apply_pending()
            notification.refresh_from_db()
            end = (
                notification.status,
                sorted(notification.reports.values_list("outcome", "permanent")),
                Suppression.objects.filter(notification=notification).exists(),
            )
            transaction.set_rollback(True)
        return end

    assert run(arrivals, sent_after) == run(list(range(len(reports))), 0)


def test_reports_store_when_they_were_received(sent: Callable[..., Notification]) -> None:
    notification = sent()
    before = timezone.now()
    notification_report_record(
        report=DeliveryReport(
            source="esp:postmark",
            outcome=ReportOutcome.DELIVERED,
            permanent=False,
            status_code="",
            diagnostic="",
            reported_at=before - dt.timedelta(minutes=5),
            details={"event_type": "delivered"},
        ),
        notification_id=notification.id,
    )
    row = notification.reports.get()
    assert row.received_at >= before
    assert row.reported_at == before - dt.timedelta(minutes=5)
