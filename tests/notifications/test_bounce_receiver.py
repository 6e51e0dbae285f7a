"""run_bounce_receiver as a real process, reports sent to it over SMTP (smtplib), the database read
afterwards: what each kind of mail at the bounce address does to a notification, and what it must
not do. The reports are the RFC 3464 / RFC 5965 examples and Postfix's format
(tests/notifications/fixtures/), addressed to the return path of notifications made here."""

from __future__ import annotations

import smtplib
import string
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.utils import timezone
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.notifications.channels.email import reports, return_path
from apps.notifications.delivery import ReportOutcome
from apps.notifications.models import Notification, NotificationReport, Suppression
from tests.support.polling import free_port, wait_until
from tests.support.processes import ManagedProcess, process_env, start_bounce_receiver

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BOUNCE_ADDRESS = "bounces@bounces.example.com"
FIXTURES = Path(__file__).parent / "fixtures"
MAX_BYTES = 200_000
Status = Notification.Status


@pytest.fixture(autouse=True)
def bounce_address(settings) -> None:
    settings.EMAIL_BOUNCE_ADDRESS = BOUNCE_ADDRESS


@pytest.fixture(scope="module")
def receiver(django_db_setup, django_db_blocker) -> Iterator[tuple[ManagedProcess, int, int]]:
    metrics_port = free_port()
    with django_db_blocker.unblock():
        env = process_env(EMAIL_BOUNCE_ADDRESS=BOUNCE_ADDRESS, BOUNCE_METRICS_PORT=str(metrics_port))
    process, port = start_bounce_receiver(env, max_bytes=MAX_BYTES)
    yield process, port, metrics_port
    process.stop()


@pytest.fixture
def sent(make_notification: Callable[..., Notification]) -> Callable[..., Notification]:
    """A notification as the sending worker leaves it: sent, with the Message-ID it sent."""

    def make(**kwargs: Any) -> Notification:
        notification = make_notification(**kwargs)
        Notification.objects.filter(id=notification.id).update(
            status=Status.SENT, sent_at=timezone.now(), provider_message_id=f"{notification.id.hex}@eventplatform.local"
        )
        notification.refresh_from_db()
        return notification

    return make


def fixture(name: str, notification: Notification, **overrides: str) -> bytes:
    verp = return_path.return_path_address(notification.id)
    assert verp
    values = {
        "rcpt": verp,
        "envid": return_path.return_path_token(notification.id),
        "recipient": notification.recipient,
        "message_id": notification.provider_message_id,
        "notification_id": str(notification.id),
        "original_mail_from": verp,
        "return_path": verp,
    } | overrides
    text = string.Template((FIXTURES / name).read_text()).substitute(values)
    return text.replace("\n", "\r\n").encode()  # as MTAs send it (smtplib sends bytes as they are)


def send(port: int, raw: bytes, rcpt: str) -> tuple[int, bytes]:
    """One SMTP transaction from the null sender, as MTAs send reports; the reply to the final "."."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo()
        code, reply = smtp.mail("<>")
        assert code == 250, reply
        code, reply = smtp.rcpt(rcpt)
        if code != 250:
            return code, reply
        return smtp.data(raw)


def history(notification: Notification) -> list[tuple[str, str, str]]:
    return list(
        NotificationReport.objects.filter(notification=notification)
        .order_by("received_at")
        .values_list("source", "outcome", "status_code")
    )


def metric(metrics_port: int, outcome: str) -> float:
    text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    line = f'eventplatform_bounce_messages_total{{outcome="{outcome}"}}'
    return sum(float(row.split()[-1]) for row in text.splitlines() if row.startswith(line))


# --- the table: each kind of real report, what it does (parsed here, without the server)

PARSE_TABLE = [
    # fixture, kind, outcome, permanent, status code
    ("postfix_bounce_5.1.1.eml", "dsn", ReportOutcome.BOUNCED, True, "5.1.1"),
    ("postfix_success_relayed.eml", "dsn", ReportOutcome.DELIVERED, False, "2.0.0"),
    ("rfc3464_simple.eml", "dsn", ReportOutcome.BOUNCED, False, "4.0.0"),
    ("rfc3464_delayed.eml", "dsn", ReportOutcome.DELAYED, False, "4.4.1"),
    ("arf_rfc5965.eml", "arf", ReportOutcome.COMPLAINED, True, "abuse"),
    ("qmail_bounce.eml", "bounce_text", ReportOutcome.BOUNCED, True, "5.0.0"),
]


@pytest.mark.parametrize(("name", "kind", "outcome", "permanent", "status_code"), PARSE_TABLE)
def test_each_report_format_is_read_as(
    sent: Callable[..., Notification], name: str, kind: str, outcome: ReportOutcome, permanent: bool, status_code: str
) -> None:
    notification = sent()
    parsed = reports.parse(fixture(name, notification), envelope_notifications=[notification.id])
    assert parsed.kind == kind, parsed
    [found] = parsed.reports
    assert (found.report.outcome, found.report.permanent, found.report.status_code) == (outcome, permanent, status_code)
    assert found.notification_id == notification.id


@pytest.mark.parametrize("feedback_type", ["auth-failure", "not-spam", "fraud", "virus", "other"])
def test_feedback_reports_other_than_abuse_are_not_complaints(
    sent: Callable[..., Notification], feedback_type: str
) -> None:
    notification = sent()
    raw = fixture("arf_rfc5965.eml", notification)
    raw = raw.replace(b"Feedback-Type: abuse", f"Feedback-Type: {feedback_type}".encode())
    parsed = reports.parse(raw, envelope_notifications=[])
    assert (parsed.kind, parsed.reports, parsed.unusable) == ("", [], "not_a_complaint")


def test_the_return_path_token_verifies_in_any_case_and_a_bare_id_does_not(sent: Callable[..., Notification]) -> None:
    notification = sent()
    address = return_path.return_path_address(notification.id)
    assert address and address.startswith("bounces+") and address.endswith("@bounces.example.com")
    assert len(address.split("@")[0]) <= 64
    assert return_path.address_notification(address.upper()) == notification.id
    assert return_path.address_notification(f"bounces+{notification.id}@bounces.example.com") is None
    assert return_path.address_notification(f"bounces+{notification.id.hex}@bounces.example.com") is None
    token = return_path.return_path_token(notification.id)
    tampered = token[:-1] + ("a" if token[-1] != "a" else "b")
    assert return_path.token_verify(tampered) is None
    other = return_path.return_path_token(uuid.uuid4())
    assert return_path.token_verify(token[:26] + other[26:]) is None  # another id's MAC


# --- through the server


def test_postfix_dsns_for_many_notifications_end_bounced_or_delivered(
    receiver: tuple[ManagedProcess, int, int], sent: Callable[..., Notification]
) -> None:
    _, port, metrics_port = receiver
    before = metric(metrics_port, "dsn")
    bounced = [sent(email=f"gone{i}@example.org") for i in range(12)]
    delivered = [sent(email=f"here{i}@example.org") for i in range(12)]
    for notification in bounced:
        raw = fixture("postfix_bounce_5.1.1.eml", notification)
        assert send(port, raw, return_path.return_path_address(notification.id) or "")[0] == 250
    for notification in delivered:
        raw = fixture("postfix_success_relayed.eml", notification)
        assert send(port, raw, return_path.return_path_address(notification.id) or "")[0] == 250
    for notification in bounced:
        notification.refresh_from_db()
        assert (notification.status, notification.last_error_code) == (Status.BOUNCED, "5.1.1")
        assert "550 5.1.1" in notification.last_error_message
        assert history(notification) == [("dsn", "bounced", "5.1.1")]
    for notification in delivered:
        notification.refresh_from_db()
        assert notification.status == Status.DELIVERED
        assert history(notification) == [("dsn", "delivered", "2.0.0")]
    assert sorted(Suppression.objects.values_list("address", flat=True)) == sorted(n.recipient for n in bounced)
    row = NotificationReport.objects.filter(notification=bounced[0]).get()
    assert row.details["Action"] == "failed" and row.details["Remote-MTA"] == "dns; mailbox.example.org"
    assert metric(metrics_port, "dsn") - before == 24


def test_the_same_dsn_delivered_twice_is_one_history_row(
    receiver: tuple[ManagedProcess, int, int], sent: Callable[..., Notification]
) -> None:
    _, port, _ = receiver
    notification = sent()
    raw = fixture("postfix_bounce_5.1.1.eml", notification)
    for _attempt in range(2):  # the MTA did not get our 250 the first time
        assert send(port, raw, return_path.return_path_address(notification.id) or "")[0] == 250
    assert history(notification) == [("dsn", "bounced", "5.1.1")]


def test_rfc3464_examples_a_transient_failure_and_a_delay(
    receiver: tuple[ManagedProcess, int, int], sent: Callable[..., Notification]
) -> None:
    _, port, _ = receiver
    failed, delayed = sent(), sent()
    assert send(port, fixture("rfc3464_simple.eml", failed), return_path.return_path_address(failed.id) or "")[0] == 250
    # The delay report comes to the plain bounce address: its ENVID names the notification.
    assert send(port, fixture("rfc3464_delayed.eml", delayed), BOUNCE_ADDRESS)[0] == 250
    failed.refresh_from_db()
    delayed.refresh_from_db()
    assert (failed.status, failed.last_error_code) == (Status.BOUNCED, "4.0.0")
    assert delayed.status == Status.SENT  # a delay is history only
    assert history(delayed) == [("dsn", "delayed", "4.4.1")]
    assert not Suppression.objects.exists()  # 4.x.x is not permanent


def test_an_arf_complaint_names_the_message_by_its_return_path_or_its_message_id(
    receiver: tuple[ManagedProcess, int, int], sent: Callable[..., Notification]
) -> None:
    _, port, _ = receiver
    by_token, by_message_id = sent(email="spam1@example.org"), sent(email="spam2@example.org")
    assert send(port, fixture("arf_rfc5965.eml", by_token), BOUNCE_ADDRESS)[0] == 250
    # A feedback loop that strips the envelope: only the returned message's Message-ID names it.
    raw = fixture("arf_rfc5965.eml", by_message_id, original_mail_from="user@example.net", return_path="x@example.net")
    assert send(port, raw, BOUNCE_ADDRESS)[0] == 250
    for notification in (by_token, by_message_id):
        notification.refresh_from_db()
        assert notification.status == Status.COMPLAINED
        assert history(notification) == [("arf", "complained", "abuse")]
    assert dict(Suppression.objects.values_list("address", "reason")) == {
        "spam1@example.org": "complained",
        "spam2@example.org": "complained",
    }


def test_a_plain_text_bounce_is_read_by_flufl_bounce(
    receiver: tuple[ManagedProcess, int, int], sent: Callable[..., Notification]
) -> None:
    _, port, _ = receiver
    notification = sent()
    raw = fixture("qmail_bounce.eml", notification)
    assert send(port, raw, return_path.return_path_address(notification.id) or "")[0] == 250
    notification.refresh_from_db()
    assert notification.status == Status.BOUNCED
    assert history(notification) == [("bounce_text", "bounced", "5.0.0")]
    assert Suppression.objects.filter(address=notification.recipient, reason="bounced").exists()


def test_forged_reports_change_nothing(
    receiver: tuple[ManagedProcess, int, int], sent: Callable[..., Notification]
) -> None:
    process, port, metrics_port = receiver
    forged_before = metric(metrics_port, "forged_token")
    notifications = [sent() for _ in range(5)]
    for notification in notifications:
        raw = fixture("postfix_bounce_5.1.1.eml", notification, rcpt=f"bounces+{notification.id}@bounces.example.com")
        # A DSN to bounces+<notification id>: no MAC, refused at RCPT.
        code, _ = send(port, raw, f"bounces+{notification.id}@bounces.example.com")
        assert code == 550
        # The right id with another notification's MAC.
        token = return_path.return_path_token(notification.id)
        spliced = token[:26] + return_path.return_path_token(uuid.uuid4())[26:]
        assert send(port, raw, f"bounces+{spliced}@bounces.example.com")[0] == 550
        # To the plain address, with an ENVID that does not verify: nothing names the notification.
        raw = fixture("postfix_bounce_5.1.1.eml", notification, envid=notification.id.hex)
        assert send(port, raw, BOUNCE_ADDRESS)[0] == 250
        # An abuse report naming only X-Eventplatform-Notification-Id (known to every recipient).
        raw = fixture(
            "arf_rfc5965.eml",
            notification,
            original_mail_from="someone@example.net",
            return_path="someone@example.net",
            message_id="not-ours@example.net",
        )
        assert send(port, raw, BOUNCE_ADDRESS)[0] == 250
    for notification in notifications:
        notification.refresh_from_db()
        assert notification.status == Status.SENT
        assert history(notification) == []
    assert not Suppression.objects.exists()
    assert metric(metrics_port, "forged_token") - forged_before == 10
    assert process.alive()


def test_junk_truncated_and_auto_replies_are_accepted_and_counted_and_the_server_goes_on(
    receiver: tuple[ManagedProcess, int, int], sent: Callable[..., Notification]
) -> None:
    process, port, metrics_port = receiver
    unusable_before = sum(metric(metrics_port, o) for o in ("unparseable", "no_report", "not_a_report", "auto_reply"))
    notification = sent()
    rcpt = return_path.return_path_address(notification.id) or ""
    whole = fixture("postfix_bounce_5.1.1.eml", notification)
    cut = whole.index(b"Final-Recipient")
    junk = [
        b"\x00\xff\xfe garbage \x80\x81 not a message at all",
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="x"\r\n\r\n--x\r\n'
        b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n",
        b'Content-Type: multipart/report; report-type="delivery-status\r\n\r\n--\r\n--',
        whole[:cut],  # truncated in the delivery-status part: no recipient block
        fixture("vacation_autoreply.eml", notification),
        b"Subject: hello\r\n\r\nJust a reply to your e-mail, thanks!\r\n",
    ] * 3
    for raw in junk:
        assert send(port, raw, rcpt)[0] == 250
    notification.refresh_from_db()
    assert notification.status == Status.SENT and history(notification) == []
    assert process.alive()
    unusable = sum(metric(metrics_port, o) for o in ("unparseable", "no_report", "not_a_report", "auto_reply"))
    assert unusable - unusable_before == len(junk)
    assert metric(metrics_port, "auto_reply") >= 3
    # and it still records a real report afterwards
    assert send(port, whole, rcpt)[0] == 250
    notification.refresh_from_db()
    assert notification.status == Status.BOUNCED


def test_oversize_mail_is_552_and_other_recipients_550(
    receiver: tuple[ManagedProcess, int, int], sent: Callable[..., Notification]
) -> None:
    process, port, _ = receiver
    notification = sent()
    rcpt = return_path.return_path_address(notification.id) or ""
    oversize = fixture("postfix_bounce_5.1.1.eml", notification) + b"\r\n" + (b"x" * 990 + b"\r\n") * 250
    assert len(oversize) > MAX_BYTES
    for _ in range(3):
        assert send(port, oversize, rcpt)[0] == 552
    for other in ("postmaster@bounces.example.com", "someone@example.org", "bouncesx+abc@bounces.example.com"):
        assert send(port, b"Subject: relay me\r\n\r\nhi\r\n", other)[0] == 550
    notification.refresh_from_db()
    assert notification.status == Status.SENT
    assert process.alive()


def test_database_unreachable_is_451_and_the_receiver_stays_up(sent: Callable[..., Notification]) -> None:
    """A receiver whose database cannot be reached (a closed port) answers 451 4.3.0, so the MTA
    keeps the report; with Postfix and a stopped PostgreSQL: test_bounces_postfix.py."""
    notification = sent()
    env = process_env(
        EMAIL_BOUNCE_ADDRESS=BOUNCE_ADDRESS,
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nowhere",
        BOUNCE_METRICS_PORT=str(free_port()),
    )
    process, port = start_bounce_receiver(env)
    try:
        raw = fixture("postfix_bounce_5.1.1.eml", notification)
        for _ in range(3):
            code, reply = send(port, raw, return_path.return_path_address(notification.id) or "")
            assert (code, reply[:5]) == (451, b"4.3.0"), reply
        assert process.alive()
    finally:
        process.stop()
    assert "bounce.database_unavailable" in process.output()


def test_sigterm_stops_it_cleanly(django_db_setup) -> None:
    env = process_env(EMAIL_BOUNCE_ADDRESS=BOUNCE_ADDRESS, BOUNCE_METRICS_PORT=str(free_port()))
    process, _ = start_bounce_receiver(env)
    process.stop(timeout=10)
    assert process.process.returncode == 0, process.output()
    assert "bounce_receiver.stopped" in process.output()


def test_the_envelope_sender_is_the_return_path_and_no_dsn_is_asked_of_a_server_without_it(
    settings, make_notification: Callable[..., Notification]
) -> None:
    """aiosmtpd offers no DSN (and refuses MAIL parameters it does not know): the message goes with
    the VERP sender and no DSN parameters. With Postfix, which offers DSN: test_bounces_postfix.py."""
    from aiosmtpd.controller import Controller

    from apps.notifications.channels import reset_providers
    from apps.notifications.channels.email.providers import EmailProvider
    from apps.notifications.providers import OutgoingMessage

    received: list[tuple[str, list[str], bytes]] = []

    class Recording:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.append((envelope.mail_from, list(envelope.mail_options), envelope.content))
            return "250 OK"

    port = free_port()
    server = Controller(Recording(), hostname="127.0.0.1", port=port)
    server.start()
    try:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", port
        settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
        settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
        reset_providers()
        provider = EmailProvider()
        notifications = [make_notification(email=f"ada{i}@example.org") for i in range(20)]
        for notification in notifications:
            provider.send(OutgoingMessage(str(notification.id), notification.recipient, "Hello", "Body"))
    finally:
        server.stop()
        reset_providers()
    assert [mail_from for mail_from, _, _ in received] == [return_path.return_path_address(n.id) for n in notifications]
    # No RET, ENVID (nor NOTIFY at RCPT, which aiosmtpd would refuse): SIZE only.
    assert all(option.startswith("SIZE=") for _, options, _ in received for option in options)
    assert all(b"From: " in content and b"bounces+" not in content for _, _, content in received)


def test_run_pipeline_starts_the_bounce_receiver_when_a_bounce_address_is_set(tmp_path) -> None:
    import os
    import signal

    from tests.support.processes import descendants, smtp_greets
    from tests.test_commands import alive, start_pipeline

    smtp_port = free_port()
    env = process_env(
        BROKER_URL=os.environ["BROKER_URL"],
        RELAY_METRICS_PORT=str(free_port()),
        dramatiq_prom_port=str(free_port()),
        SCHEDULER_METRICS_PORT=str(free_port()),
        EMAIL_BOUNCE_ADDRESS=BOUNCE_ADDRESS,
        BOUNCE_RECEIVER_BIND=f"127.0.0.1:{smtp_port}",
        BOUNCE_METRICS_PORT=str(free_port()),
    )
    log_path = tmp_path / "pipeline.log"
    pipeline = start_pipeline(env, log_path, "--bind", f"127.0.0.1:{free_port()}")
    try:
        wait_until(lambda: smtp_greets(smtp_port), timeout=60, what="the bounce receiver")
        children = descendants(pipeline.pid)
        pipeline.send_signal(signal.SIGTERM)
        assert pipeline.wait(timeout=15) == 0
        wait_until(lambda: not any(alive(pid) for pid in children), timeout=5, what="every child gone")
        assert not smtp_greets(smtp_port)
        assert "bounce_receiver.stopped" in log_path.read_text()
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
            pipeline.wait(timeout=10)


def test_a_dsn_with_8_bit_and_nul_bytes_in_its_fields_is_recorded(
    receiver: tuple[ManagedProcess, int, int], sent: Callable[..., Notification]
) -> None:
    _, port, _ = receiver
    notification = sent()
    raw = fixture("postfix_bounce_5.1.1.eml", notification).replace(
        b"Remote-MTA: dns; mailbox.example.org", b"Remote-MTA: dns; m\xe4ilbox\x00.example.org"
    )
    raw = raw.replace(b"User unknown\r\n\r\n--", b"Benutzer unbekannt \xfc\xff\r\n\r\n--")
    assert send(port, raw, return_path.return_path_address(notification.id) or "")[0] == 250
    notification.refresh_from_db()
    assert (notification.status, notification.last_error_code) == (Status.BOUNCED, "5.1.1")
    assert "Benutzer unbekannt" in notification.last_error_message
    assert "\x00" not in NotificationReport.objects.get(notification=notification).details["Remote-MTA"]


def test_the_embedded_pipeline_runs_the_bounce_receiver_in_process(tmp_path) -> None:
    import signal

    from tests.support.processes import smtp_greets
    from tests.test_commands import embedded_env, prepare, start_pipeline

    smtp_port = free_port()
    env = embedded_env(tmp_path, EMAIL_BOUNCE_ADDRESS=BOUNCE_ADDRESS, BOUNCE_RECEIVER_BIND=f"127.0.0.1:{smtp_port}")
    prepare(env)
    pipeline = start_pipeline(env, tmp_path / "pipeline.log", "--bind", f"127.0.0.1:{free_port()}")
    try:
        wait_until(lambda: smtp_greets(smtp_port), timeout=60, what="the bounce receiver")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
            smtp.ehlo()
            smtp.mail("<>")
            assert smtp.rcpt("someone@example.org")[0] == 550
        pipeline.send_signal(signal.SIGTERM)
        assert pipeline.wait(timeout=15) == 0
        assert not smtp_greets(smtp_port)
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
            pipeline.wait(timeout=10)


@pytest.mark.parametrize("name", sorted(path.name for path in FIXTURES.glob("*.eml")))
def test_parsing_any_truncation_of_a_real_report_raises_nothing(sent: Callable[..., Notification], name: str) -> None:
    """Whatever is cut off (a connection lost mid-message, a broken MTA), parse returns a result."""
    notification = sent()
    whole = fixture(name, notification)
    for end in range(0, len(whole), 5):
        parsed = reports.parse(whole[:end], envelope_notifications=[notification.id])
        assert parsed.kind or parsed.unusable


@given(st.binary(max_size=3000))
@hypothesis_settings(max_examples=300, deadline=None)
def test_parsing_arbitrary_bytes_raises_nothing(raw: bytes) -> None:
    parsed = reports.parse(raw, envelope_notifications=[uuid.uuid4()])
    assert parsed.kind or parsed.unusable


def test_every_line_the_receiver_logged_is_json_without_a_full_address(
    receiver: tuple[ManagedProcess, int, int], sent: Callable[..., Notification]
) -> None:
    """Run after the tests above, over what they made the shared receiver log."""
    import json
    import re

    process, port, _ = receiver
    notification = sent(email="private.person@example.org")
    assert send(port, fixture("postfix_bounce_5.1.1.eml", notification), BOUNCE_ADDRESS)[0] == 250
    assert send(port, b"Subject: hi\r\n\r\nhello\r\n", "private.person@example.org")[0] == 550
    lines = [line for line in process.output().splitlines() if line.strip()]
    assert lines
    events = [json.loads(line) for line in lines]
    assert any(event["event"] == "notification.report_applied" for event in events)
    assert not [line for line in lines if re.search(r"[\w.+-]{2,}@(example\.org|bounces\.example\.com)", line)]
