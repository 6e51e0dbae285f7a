"""A refusal of the address at hand-over is a bounce (issue 19 item 4), and a send to a suppressed
address ends `suppressed` without a provider call (item 7): against a real aiosmtpd server and the
SMS API stand-in, counting what reached them."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection

from apps.notifications.delivery import (
    DeliveryReport,
    ReportOutcome,
    notification_report_record,
    notification_reports_apply_pending,
    suppression_lift,
)
from apps.notifications.models import Notification, NotificationAttempt, NotificationReport, Suppression
from apps.notifications.sending import notification_send
from apps.outbox.models import OutboxMessage
from tests.notifications.factories import SuppressionFactory
from tests.support.sms import SmsApi
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.django_db

Status = Notification.Status


def refusing(smtp_server: SmtpServer, marker: str = "nobody") -> None:
    """The mailbox server refuses, at RCPT, every address containing `marker`, as a real MX does."""

    async def handle_rcpt(server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if marker in address:
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    smtp_server.handler.handle_RCPT = handle_rcpt


def test_refused_addresses_end_bounced_and_suppressed_among_many_sends(
    email_via_smtp: SmtpServer,
    make_registration: Callable[..., Any],
    make_notification: Callable[..., Notification],
) -> None:
    # Given 30 confirmations, 10 of them to addresses the mail server does not know
    refusing(email_via_smtp)
    good = [make_notification(registration=make_registration(email=f"ada{i}@example.org")) for i in range(20)]
    bad = [make_notification(registration=make_registration(email=f"nobody{i}@Example.org")) for i in range(10)]
    # When the worker sends them all
    outcomes = [notification_send(notification_id=str(n.id)).outcome for n in good + bad]
    # Then the deliverable ones are sent, the refused ones bounced (never dead), each with the remote
    # status and reply, a history row and a suppression of the address (lower-cased whole)
    assert outcomes == ["sent"] * 20 + ["bounced"] * 10
    assert len(email_via_smtp.messages) == 20
    for notification in bad:
        notification.refresh_from_db()
        assert (notification.status, notification.last_error_code) == (Status.BOUNCED, "5.1.1")
        assert notification.last_error_message.startswith("smtp; 550 5.1.1 <nobody")
        report = NotificationReport.objects.get(notification=notification)
        assert (report.source, report.outcome, report.permanent) == ("smtp", "bounced", True)
        assert report.status_code == "5.1.1"
        attempt = NotificationAttempt.objects.get(notification=notification)
        assert (attempt.outcome, attempt.error_code) == ("permanent_error", "smtp_recipient_unknown")
    assert sorted(Suppression.objects.values_list("address", "reason")) == sorted(
        (f"nobody{i}@example.org", "bounced") for i in range(10)
    )
    assert not Notification.objects.filter(status=Status.DEAD).exists()


def test_a_send_to_a_suppressed_address_makes_no_provider_call(
    email_via_smtp: SmtpServer,
    make_registration: Callable[..., Any],
    make_notification: Callable[..., Notification],
) -> None:
    # Given a bounced address, and 15 more notifications to it (other spellings of its case too)
    refusing(email_via_smtp)
    first = make_notification(registration=make_registration(email="nobody@example.org"))
    assert notification_send(notification_id=str(first.id)).outcome == "bounced"
    refusals = email_via_smtp.handler.refused_by_stage["RCPT"]
    later = [
        make_notification(registration=make_registration(email=email))
        for email in ["nobody@example.org", "Nobody@Example.ORG"] * 5 + ["NOBODY@example.org"] * 5
    ]
    # When they are sent
    outcomes = [notification_send(notification_id=str(n.id)).outcome for n in later]
    # Then each ends suppressed, saying why, without an attempt, an SMTP conversation or its outbox row
    assert outcomes == ["suppressed"] * 15
    assert email_via_smtp.handler.refused_by_stage["RCPT"] == refusals and email_via_smtp.messages == []
    for notification in later:
        notification.refresh_from_db()
        assert (notification.status, notification.last_error_code, notification.attempts) == (
            Status.SUPPRESSED,
            "address_suppressed",
            0,
        )
        assert "It will not send until the suppression is lifted" in notification.last_error_message
    assert not NotificationAttempt.objects.filter(notification__in=later).exists()
    assert not OutboxMessage.objects.filter(id__in=[n.id for n in later], published_at__isnull=True).exists()


def test_after_the_lift_the_address_is_sent_to_again(
    email_via_smtp: SmtpServer,
    make_registration: Callable[..., Any],
    make_notification: Callable[..., Notification],
) -> None:
    suppression = SuppressionFactory(address="ada@example.org", reason="manual")
    suppressed = make_notification(registration=make_registration(email="ada@example.org"))
    assert notification_send(notification_id=str(suppressed.id)).outcome == "suppressed"
    user = User.objects.create_user("support", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="lift_suppression"))
    suppression_lift(suppression_id=suppression.id, user=User.objects.get(id=user.id), reason="asked again")
    fresh = make_notification(registration=make_registration(email="ada@example.org"))
    assert notification_send(notification_id=str(fresh.id)).outcome == "sent"
    assert len(email_via_smtp.messages) == 1


def test_a_suppressed_number_is_not_an_address_and_channels_do_not_mix(
    email_via_smtp: SmtpServer,
    sms_via_api: SmsApi,
    make_registration: Callable[..., Any],
    make_notification: Callable[..., Notification],
) -> None:
    SuppressionFactory(channel="sms", address="+4915112345678", reason="opted_out")
    registration = make_registration(email="ada@example.org", phone="+4915112345678")
    sms = make_notification(channel="sms", registration=registration)
    email = make_notification(kind="reminder_24h", registration=registration)
    assert notification_send(notification_id=str(sms.id)).outcome == "suppressed"
    assert notification_send(notification_id=str(email.id)).outcome == "sent"
    assert sms_via_api.calls == 0


def test_twilio_21610_stop_ends_suppressed_opted_out_and_the_next_sms_makes_no_call(
    sms_via_api: SmsApi,
    make_registration: Callable[..., Any],
    make_notification: Callable[..., Notification],
) -> None:
    registration = make_registration(phone="+4915112345678")
    sms_via_api.scripted_replies.append(
        (400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400})
    )
    stopped = make_notification(channel="sms", registration=registration)
    assert notification_send(notification_id=str(stopped.id)).outcome == "suppressed"
    stopped.refresh_from_db()
    assert (stopped.status, stopped.last_error_code) == (Status.SUPPRESSED, "21610")
    suppression = Suppression.objects.get()
    assert (suppression.channel, suppression.address, suppression.reason, suppression.source) == (
        "sms",
        "+4915112345678",
        "opted_out",
        "sms_api",
    )
    calls = sms_via_api.calls
    later = make_notification(kind="reminder_1h", channel="sms", registration=registration)
    assert notification_send(notification_id=str(later.id)).outcome == "suppressed"
    assert sms_via_api.calls == calls


def test_twilio_invalid_number_ends_bounced_and_suppressed(
    sms_via_api: SmsApi,
    make_registration: Callable[..., Any],
    make_notification: Callable[..., Notification],
) -> None:
    sms_via_api.scripted_replies.append(
        (400, {"code": 21211, "message": "The 'To' number +4930000000 is not a valid phone number.", "status": 400})
    )
    notification = make_notification(channel="sms", registration=make_registration(phone="+4930000000"))
    assert notification_send(notification_id=str(notification.id)).outcome == "bounced"
    notification.refresh_from_db()
    assert (notification.status, notification.last_error_code) == (Status.BOUNCED, "21211")
    assert NotificationReport.objects.get(notification=notification).source == "sms_api"
    assert Suppression.objects.get().reason == "bounced"


def test_a_policy_refusal_at_rcpt_is_still_dead_not_a_bounce(
    email_via_smtp: SmtpServer, make_notification: Callable[..., Notification]
) -> None:
    # 550 5.7.1 is the server's policy about us, not the address: not suppressed
    email_via_smtp.handler.scripted["RCPT"].append("550 5.7.1 Recipient refused by local policy")
    notification = make_notification()
    assert notification_send(notification_id=str(notification.id)).outcome == "dead"
    assert not Suppression.objects.exists()


def test_the_claims_suppression_check_is_an_index_lookup(
    email_via_smtp: SmtpServer, make_notification: Callable[..., Notification]
) -> None:
    """No query per send and no scan: the EXISTS in the claim statement (the one a send runs,
    captured) reads the partial unique index of active suppressions, index-only, whatever their number."""
    Suppression.objects.bulk_create(SuppressionFactory.build_batch(5000))
    statements: list[tuple[str, Any]] = []

    def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        statements.append((sql, params))
        return execute(sql, params, many, context)

    notification = make_notification()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE notifications_suppression")
    with connection.execute_wrapper(capture):
        assert notification_send(notification_id=str(notification.id)).outcome == "sent"
    claim, params = next((sql, params) for sql, params in statements if "EXISTS" in sql and "suppression" in sql)
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (COSTS OFF) {claim}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Index Only Scan using suppression_one_active_per_address" in plan, plan
    assert "Seq Scan" not in plan, plan


@pytest.mark.django_db(transaction=True)
def test_reports_racing_their_sends_all_land_once_the_scheduler_ran(
    email_via_smtp: SmtpServer, make_notification: Callable[..., Notification]
) -> None:
    # Given 20 e-mails being sent while a "delivered" report about each arrives at the same moment
    # (an SMS callback or a fast DSN outrunning the worker's `sent` write), on their own connections
    notifications = [make_notification() for _ in range(20)]
    barrier = threading.Barrier(2 * len(notifications))
    errors: list[BaseException] = []

    def run(work: Callable[[], object]) -> None:
        try:
            barrier.wait()
            work()
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    delivered = DeliveryReport(
        source="dsn",
        outcome=ReportOutcome.DELIVERED,
        permanent=False,
        status_code="2.0.0",
        diagnostic="smtp; 250 2.0.0 Ok: queued",
        reported_at=None,
        details={"Action": "delivered"},
        dedupe_key="dsn-1",
    )
    threads = [
        threading.Thread(target=run, args=(work,))
        for notification in notifications
        for work in (
            lambda n=notification: notification_send(notification_id=str(n.id)),
            lambda n=notification: notification_report_record(report=delivered, notification_id=n.id),
        )
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    # When the scheduler's job has run, Then every one ends delivered, with its one report applied
    notification_reports_apply_pending()
    assert Notification.objects.filter(status=Status.DELIVERED).count() == 20
    assert NotificationReport.objects.filter(applied=True).count() == 20
    assert len(email_via_smtp.messages) == 20
