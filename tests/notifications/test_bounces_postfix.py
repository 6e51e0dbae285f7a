"""End to end with a real MTA: the pipeline sends through a private Postfix (tests/support/postfix.py),
which relays to a mailbox server (aiosmtpd) that refuses chosen recipients with 550 5.1.1, and
routes the bounce domain to run_bounce_receiver. The DSNs under test are Postfix's own: a success
report (`relayed`, since the mailbox server offers no DSN and we asked NOTIFY=SUCCESS) and a
failure report (`failed`, 5.1.1) for each message, sent to its return path."""

from __future__ import annotations

import email
import email.policy
import smtplib
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from django.db import connection

from apps.notifications.channels import reset_providers
from apps.notifications.channels.email import return_path
from apps.notifications.models import Notification, NotificationReport, Suppression
from tests.notifications.conftest import InProcessPipeline
from tests.support.polling import free_port, wait_until
from tests.support.postfix import Postfix
from tests.support.processes import ManagedProcess, process_env, start_bounce_receiver

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BOUNCE_ADDRESS = "bounces@bounces.example.com"
Status = Notification.Status


@dataclass
class MailboxHandler:
    """The recipients' mail server: refuses the addresses in `unknown` with 550 5.1.1 at RCPT (those
    in `busy` with 451, so Postfix retries), keeps the rest with their envelope sender."""

    unknown: set[str] = field(default_factory=set)
    busy: set[str] = field(default_factory=set)
    received: list[tuple[str, list[str], email.message.EmailMessage]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        with self.lock:
            if address.lower() in self.busy:
                return "451 4.2.1 Mailbox busy, try again later"
            if address.lower() in self.unknown:
                return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 2.0.0 Ok: queued"


@dataclass
class Mail:
    mailbox: MailboxHandler
    postfix: Postfix
    receiver: ManagedProcess

    def logs(self) -> str:
        return f"--- postfix\n{self.postfix.log()[-6000:]}\n--- receiver\n{self.receiver.output()[-4000:]}"


@pytest.fixture
def mail(settings, django_db_setup) -> Iterator[Mail]:
    """Mailbox server, bounce receiver and Postfix in front of both; the e-mail provider sends to
    Postfix with EMAIL_BOUNCE_ADDRESS set. Postfix is stopped in the teardown whatever happened."""
    mailbox = MailboxHandler()
    mailbox_port = free_port()
    mailbox_server = Controller(mailbox, hostname="127.0.0.1", port=mailbox_port)
    mailbox_server.start()
    env = process_env(EMAIL_BOUNCE_ADDRESS=BOUNCE_ADDRESS, BOUNCE_METRICS_PORT=str(free_port()))
    receiver, receiver_port = start_bounce_receiver(env)
    postfix = Postfix(routes={"example.org": mailbox_port, "bounces.example.com": receiver_port})
    try:
        postfix.start()
        settings.EMAIL_BOUNCE_ADDRESS = BOUNCE_ADDRESS
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", postfix.port
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        settings.EMAIL_TIMEOUT = 10
        reset_providers()
        yield Mail(mailbox, postfix, receiver)
    finally:
        postfix.stop()
        receiver.stop()
        mailbox_server.stop()
        reset_providers()


def wait_for_statuses(mail: Mail, notifications: list[Notification], statuses: set[str], timeout: float = 90) -> None:
    ids = [n.id for n in notifications]
    try:
        wait_until(
            lambda: Notification.objects.filter(id__in=ids, status__in=statuses).count() == len(ids),
            timeout=timeout,
            interval=0.3,
            what=f"{len(ids)} notifications {sorted(statuses)}",
        )
    except TimeoutError:
        found = list(Notification.objects.filter(id__in=ids).values_list("recipient", "status", "last_error_code"))
        raise AssertionError(f"{found}\n{mail.logs()}") from None


def test_postfix_dsns_end_delivered_or_bounced_and_a_bounced_address_is_suppressed_next_time(
    mail: Mail, pipeline: InProcessPipeline, make_notification: Callable[..., Notification]
) -> None:
    # Given 24 confirmations: 10 to mailboxes that do not exist, 14 to ones that do
    refused = [f"gone{i}@example.org" for i in range(10)]
    mail.mailbox.unknown.update(refused)
    notifications = [make_notification(email=address) for address in refused] + [
        make_notification(email=f"here{i}@example.org") for i in range(14)
    ]
    # When the pipeline sends them through Postfix, and Postfix reports back
    wait_for_statuses(mail, notifications, {Status.DELIVERED, Status.BOUNCED})
    # Then the refused ones are bounced with the remote status, suppressed; the others delivered
    by_recipient = {n.recipient: n for n in Notification.objects.filter(id__in=[n.id for n in notifications])}
    for address in refused:
        notification = by_recipient[address]
        assert (notification.status, notification.last_error_code) == (Status.BOUNCED, "5.1.1"), mail.logs()
        assert "User unknown" in notification.last_error_message
        report = NotificationReport.objects.get(notification=notification)
        assert (report.source, report.details["Action"], report.details["Status"]) == ("dsn", "failed", "5.1.1")
        # We asked for the report with ENVID = the token (RFC 3461); Postfix returned it.
        assert report.details["Original-Envelope-Id"] == return_path.return_path_token(notification.id)
    delivered = [n for address, n in by_recipient.items() if address not in refused]
    assert {n.status for n in delivered} == {Status.DELIVERED}
    assert {r.details["Action"] for r in NotificationReport.objects.filter(notification__in=delivered)} == {"relayed"}
    assert sorted(Suppression.objects.filter(reason="bounced").values_list("address", flat=True)) == sorted(refused)
    # Each deliverable message reached the mailbox once, from its own return path, From unchanged.
    with mail.mailbox.lock:
        received = list(mail.mailbox.received)
    assert sorted(rcpts[0] for _, rcpts, _ in received) == sorted(n.recipient for n in delivered)
    for mail_from, _, message in received:
        notification_id = message["X-Eventplatform-Notification-Id"]
        assert mail_from == return_path.return_path_address(notification_id)
        assert "bounces" not in str(message["From"])
    handed_over = postfix_received(mail)
    assert handed_over == len(notifications)

    # When each bounced address registers again
    again = [make_notification(email=address.upper()) for address in refused]
    # Then the new confirmations end suppressed, and not one more message reaches Postfix
    wait_for_statuses(mail, again, {Status.SUPPRESSED})
    assert postfix_received(mail) == handed_over
    with mail.mailbox.lock:
        assert len(mail.mailbox.received) == len(received)


def abuse_report(returned: str) -> bytes:
    """An RFC 5965 report as a mailbox provider's feedback loop sends it, the message returned whole."""
    return (
        "From: fbl@mailbox.example.org\r\nTo: bounces@bounces.example.com\r\nSubject: Abuse report\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="arf"\r\n\r\n'
        "--arf\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
        "--arf\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: MailboxFBL/1.0\r\nVersion: 1\r\n\r\n"
        f"--arf\r\nContent-Type: message/rfc822\r\n\r\n{returned}\r\n--arf--\r\n"
    ).encode()


def test_a_feedback_loop_report_through_postfix_names_the_message_by_return_path_or_message_id(
    mail: Mail, pipeline: InProcessPipeline, make_notification: Callable[..., Notification]
) -> None:
    # Given 6 confirmations delivered to the mailbox
    notifications = [make_notification(email=f"reader{i}@example.org") for i in range(6)]
    wait_for_statuses(mail, notifications, {Status.DELIVERED})
    with mail.mailbox.lock:
        received = list(mail.mailbox.received)
    # When the mailbox provider reports each as spam to the plain bounce address, through Postfix:
    # half with the Return-Path it stamped at delivery, half with the message alone
    with smtplib.SMTP("127.0.0.1", mail.postfix.port, timeout=30) as smtp:
        for index, (mail_from, _, message) in enumerate(received):
            returned = message.as_string().replace("\n", "\r\n")
            if index % 2 == 0:
                returned = f"Return-Path: <{mail_from}>\r\n{returned}"
            smtp.sendmail("fbl@mailbox.example.org", [BOUNCE_ADDRESS], abuse_report(returned))
    # Then each is complained, and its address suppressed
    wait_for_statuses(mail, notifications, {Status.COMPLAINED})
    assert sorted(Suppression.objects.filter(reason="complained").values_list("address", flat=True)) == sorted(
        n.recipient for n in notifications
    )
    complaints = NotificationReport.objects.filter(notification__in=notifications, outcome="complained")
    assert sorted(complaints.values_list("source", flat=True)) == ["arf"] * len(notifications)


def postfix_received(mail: Mail) -> int:
    """Messages Postfix's SMTP server took from a client (its own DSNs are not among them)."""
    return sum(1 for line in mail.postfix.log().splitlines() if "postfix/smtpd[" in line and ": client=" in line)


def test_a_dsn_arriving_while_postgresql_is_stopped_is_deferred_and_lands_after_its_restart(
    mail: Mail, pipeline: InProcessPipeline, make_notification: Callable[..., Notification]
) -> None:
    """Stops PostgreSQL (and starts it again in `finally`): not run by helpers, see the report."""
    # Given 10 messages the mailbox refuses for now with 451 (Postfix keeps retrying them)
    refused = [f"later{i}@example.org" for i in range(10)]
    mail.mailbox.busy.update(refused)
    notifications = [make_notification(email=address) for address in refused]
    wait_for_statuses(mail, notifications, {Status.SENT})
    cluster = subprocess.run(["ls", "/etc/postgresql"], capture_output=True, text=True, check=True).stdout.split()[0]
    pg_ctl = ["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main"]
    try:
        # When PostgreSQL stops, and then the mailbox refuses them for good: Postfix's DSNs reach a
        # receiver that cannot record them
        connection.close()
        subprocess.run([*pg_ctl, "stop"], check=True, timeout=60)  # fast shutdown, its default
        with mail.mailbox.lock:
            mail.mailbox.busy.clear()
            mail.mailbox.unknown.update(refused)
        mail.postfix.flush()
        # Then the receiver answers 451 4.3.0 and Postfix keeps each report in its queue
        wait_until(lambda: mail.postfix.log().count("451 4.3.0") >= len(refused), timeout=90, what="451 4.3.0")
        assert mail.receiver.alive()
    finally:
        subprocess.run([*pg_ctl, "start"], check=True, timeout=60)
    connection.close()
    # And when PostgreSQL is back, Postfix's retry lands every report
    mail.postfix.flush()
    wait_for_statuses(mail, notifications, {Status.BOUNCED}, timeout=120)
    assert NotificationReport.objects.filter(notification__in=notifications).count() == len(refused)
