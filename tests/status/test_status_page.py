"""/admin/status/: staff only, and every figure matches what is in the database and the broker."""

from __future__ import annotations

import datetime as dt
import re
import uuid
import xml.etree.ElementTree as ET
from html import unescape

import dramatiq
import pika
import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone
from dramatiq.brokers.stub import StubBroker

from apps.notifications.models import CircuitBreaker, Notification, SchedulerHeartbeat
from apps.registrations.models import FailedApply, Registration
from apps.support.status import selectors
from apps.support.status.selectors import chart_start
from apps.webhooks.models import Portal, WebhookEvent
from tests.notifications.factories import NotificationAttemptFactory, NotificationFactory
from tests.outbox.factories import OutboxMessageFactory
from tests.registrations.factories import RegistrationFactory
from tests.webhooks.factories import WebhookEventFactory

pytestmark = pytest.mark.django_db

SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def staff(client: Client) -> Client:
    """A support user: staff with view permissions only (what the status page's links lead to)."""
    user = User.objects.create_user("support", "support@example.org", "pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            codename__startswith="view_", content_type__app_label__in=["notifications", "webhooks"]
        )
    )
    client.force_login(user)
    return client


def _event(portal: Portal, *, status: str, received_at: dt.datetime) -> WebhookEvent:
    return WebhookEventFactory(portal=portal, status=status, received_at=received_at)


def _notification(
    registration: Registration, *, status: str, updated_at: dt.datetime, code: str = "", kind: str = "confirmation"
) -> Notification:
    notification = NotificationFactory(
        registration=registration, kind=kind, dedupe_key=uuid.uuid4().hex, status=status, last_error_code=code
    )
    Notification.objects.filter(id=notification.id).update(updated_at=updated_at)  # auto_now: set it afterwards
    return notification


def test_anonymous_is_sent_to_the_login_page(client: Client) -> None:
    response = client.get("/admin/status/")
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/?next=/admin/status/"


def test_a_user_who_is_not_staff_is_sent_to_the_login_page(client: Client) -> None:
    client.force_login(User.objects.create_user("attendee", "a@example.org", "pw"))
    response = client.get("/admin/status/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_the_admin_index_links_to_the_status_page(staff: Client) -> None:
    assert 'href="/admin/status/"' in staff.get("/admin/").content.decode()


def test_staff_see_window_counts_that_match_the_seeded_rows(staff: Client, portal: Portal) -> None:
    # Given rows inside the last hour, inside the last day only, and older than a day.
    now = timezone.now()
    recent, earlier, old = now - dt.timedelta(minutes=10), now - dt.timedelta(hours=5), now - dt.timedelta(days=3)
    for received_at in (recent, recent, earlier, old):
        _event(portal, status="accepted", received_at=received_at)
    _event(portal, status="rejected", received_at=recent)
    registration = RegistrationFactory(portal=portal, external_id="R-1", email="ada@example.org")
    for _ in range(3):
        _notification(registration, status="sent", updated_at=recent)
    _notification(registration, status="sent", updated_at=old)
    _notification(registration, status="retrying", updated_at=recent)
    dead_recent = [
        _notification(registration, status="dead", updated_at=recent, code="smtp_permanent") for _ in range(2)
    ]
    _notification(registration, status="dead", updated_at=earlier, code="sms_permanent")
    _notification(registration, status="dead", updated_at=old, code="smtp_permanent")
    failed_event = _event(portal, status="accepted", received_at=old)
    FailedApply.objects.create(
        webhook_event=failed_event,
        event_id=failed_event.id,
        error_code="actor_failed",
        first_failed_at=earlier,
        last_failed_at=earlier,
    )
    resolved_event = _event(portal, status="accepted", received_at=old)
    FailedApply.objects.create(
        webhook_event=resolved_event,
        event_id=resolved_event.id,
        error_code="actor_failed",
        first_failed_at=recent,
        last_failed_at=recent,
        resolved_at=now,
    )

    # When staff open the status page.
    response = staff.get("/admin/status/")

    # Then each window counts exactly its rows.
    assert response.status_code == 200
    hour, day = response.context["status"].windows
    figures = {
        window.label: {f.label: f.count for f in window.webhooks + window.notifications} for window in (hour, day)
    }
    assert figures["last hour"] == {"Accepted": 2, "Rejected": 1, "Sent": 3, "Retrying": 1, "Dead": 2}
    assert figures["last day"] == {"Accepted": 3, "Rejected": 1, "Sent": 3, "Retrying": 1, "Dead": 3}
    assert [(f.label, f.count) for f in hour.dead_by_code] == [("smtp_permanent", 2)]
    assert [(f.label, f.count) for f in day.dead_by_code] == [("smtp_permanent", 2), ("sms_permanent", 1)]
    assert (hour.failed_applies.count, day.failed_applies.count) == (0, 1)

    # And the dead-by-code figure links to the admin list filtered to exactly those notifications.
    html = response.content.decode()
    link = unescape(re.search(r'<a href="([^"]*last_error_code__exact=smtp_permanent[^"]*)">2</a>', html).group(1))
    assert link == hour.dead_by_code[0].url
    listed = staff.get(link)
    assert listed.status_code == 200
    assert {row.id for row in listed.context["cl"].result_list} == {n.id for n in dead_recent}


def test_outbox_backlog_breakers_and_scheduler(staff: Client) -> None:
    now = timezone.now()
    OutboxMessageFactory(available_at=now - dt.timedelta(seconds=90))
    OutboxMessageFactory()
    OutboxMessageFactory(available_at=now + dt.timedelta(hours=1))  # a durable delay: not due
    OutboxMessageFactory(published_at=now)
    opened = now - dt.timedelta(minutes=7)
    CircuitBreaker.objects.create(provider="smtp", state="open", consecutive_failures=5, opened_at=opened)
    CircuitBreaker.objects.create(
        provider="twilio", state="misconfigured", opened_at=opened, reason="sms_auth_failed: 401 Authenticate"
    )
    CircuitBreaker.objects.create(provider="fallback", state="closed")

    status = staff.get("/admin/status/").context["status"]
    assert status.outbox_due == 2
    assert 89 <= status.outbox_oldest_age_seconds < 600
    breakers = {b.provider: (b.state, b.since) for b in status.breakers}
    assert breakers["smtp"] == ("open", opened)
    assert breakers["twilio"] == ("misconfigured", opened)
    assert breakers["fallback"][0] == "closed"
    page = staff.get("/admin/status/").content.decode()
    assert "misconfigured" in page and "sms_auth_failed: 401 Authenticate" in page


def test_scheduler_never_run_then_stale_then_fresh(staff: Client) -> None:
    html = staff.get("/admin/status/").content.decode()
    section = html.index('id="status-scheduler"')
    assert "never" in html[section : html.index("</section>", section)]

    long_ago = timezone.now() - dt.timedelta(seconds=settings.STATUS_SCHEDULER_STALE_SECONDS + 60)
    SchedulerHeartbeat.objects.create(
        name="send_reminders", last_started_at=long_ago, last_finished_at=long_ago, last_duration_ms=40
    )
    [row] = staff.get("/admin/status/").context["status"].scheduler
    assert (row.name, row.last_run_at, row.stale) == ("send_reminders", long_ago, True)

    SchedulerHeartbeat.objects.filter(name="send_reminders").update(last_finished_at=timezone.now())
    [row] = staff.get("/admin/status/").context["status"].scheduler
    assert row.stale is False


def test_chart_has_a_bar_pair_per_five_minutes_with_the_seeded_counts(staff: Client, portal: Portal) -> None:
    now = timezone.now()
    registration = RegistrationFactory(portal=portal, external_id="R-2")
    notification = _notification(registration, status="sent", updated_at=now)
    start = chart_start(now)
    # Given 2 sent and 1 failed attempt in the last bucket, 1 sent in the first, 1 outside the chart.
    attempts = [
        (now, "sent"),
        (now, "sent"),
        (now, "transient_error"),
        (start + dt.timedelta(seconds=30), "sent"),
        (start - dt.timedelta(minutes=1), "sent"),
    ]
    for number, (started_at, outcome) in enumerate(attempts, start=1):
        NotificationAttemptFactory(
            notification=notification, number=number, started_at=started_at, duration_ms=5, outcome=outcome
        )

    html = staff.get("/admin/status/").content.decode()
    begin = html.index('<svg xmlns="http://www.w3.org/2000/svg" class="status-chart"')
    svg = ET.fromstring(html[begin : html.index("</svg>", begin) + len("</svg>")])
    sent = [int(rect.get("data-count")) for rect in svg.iter(f"{SVG_NS}rect") if rect.get("class") == "sent"]
    failed = [int(rect.get("data-count")) for rect in svg.iter(f"{SVG_NS}rect") if rect.get("class") == "failed"]
    assert len(sent) == len(failed) == 24 * 12
    assert (sent[0], sent[-1], failed[-1]) == (1, 2, 1)
    assert sum(sent) == 3 and sum(failed) == 1
    chart_section = html[html.index('id="status-chart"') :]
    assert "<script" not in chart_section and "src=" not in chart_section  # drawn on the server, no CDN


def test_rabbitmq_queue_depths_include_the_dead_letter_queue(staff: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given two messages in the notifications dead-letter queue of this run's own vhost. The queues
    # are declared by the project's broker, with the arguments every process declares them with
    # (a bare declare here would make every later declare of this run's vhost fail).
    dramatiq.get_broker().declare_queue("notifications", ensure=True)
    connection = pika.BlockingConnection(pika.URLParameters(settings.BROKER_URL))
    try:
        channel = connection.channel()
        channel.queue_purge("notifications.XQ")
        for _ in range(2):
            channel.basic_publish("", "notifications.XQ", b"{}")
    finally:
        connection.close()
    monkeypatch.setattr(selectors, "_collector", None)  # no cached depths from an earlier test

    try:
        broker = staff.get("/admin/status/").context["status"].broker
    finally:
        dramatiq.get_broker().flush("notifications")  # the two messages are not for later tests
    assert broker.kind == "rabbitmq" and broker.reachable
    depths = {queue.name: queue.messages for queue in broker.queues}
    assert depths["notifications.XQ"] == 2
    assert "notifications.DQ" in depths


def test_embedded_mode_shows_the_in_process_broker(staff: Client, settings) -> None:
    settings.EMBEDDED_BROKER = True
    previous = dramatiq.get_broker()
    stub = StubBroker()
    stub.declare_queue("notifications")
    stub.enqueue(
        dramatiq.Message(queue_name="notifications", actor_name="notification_send", args=(), kwargs={}, options={})
    )
    dramatiq.set_broker(stub)
    try:
        response = staff.get("/admin/status/")
    finally:
        dramatiq.set_broker(previous)
    broker = response.context["status"].broker
    assert broker.kind == "embedded broker"
    assert {queue.name: queue.messages for queue in broker.queues}["notifications"] == 1
    assert "embedded broker" in response.content.decode()


def test_delivered_bounced_complained_counts_and_rates_per_window(staff: Client, portal: Portal) -> None:
    # Given in the last hour 40 e-mails handed over (30 sent, 6 delivered, 3 bounced, 1 complained),
    # 2 suppressed (never handed over), and earlier that day one more bounce
    now = timezone.now()
    recent, earlier = now - dt.timedelta(minutes=10), now - dt.timedelta(hours=5)
    registration = Registration.objects.create(portal=portal, external_id="R-1", email="ada@example.org")
    for status, count in (("sent", 30), ("delivered", 6), ("bounced", 3), ("complained", 1), ("suppressed", 2)):
        for _ in range(count):
            _notification(registration, status=status, updated_at=recent)
    _notification(registration, status="bounced", updated_at=earlier)

    response = staff.get("/admin/status/")

    hour, day = response.context["status"].windows
    assert {f.label: f.count for f in hour.delivery} == {"Delivered": 6, "Bounced": 3, "Complained": 1, "Suppressed": 2}
    assert {f.label: f.count for f in day.delivery}["Bounced"] == 4
    rates = {rate.label: (rate.count, rate.of, rate.percent) for rate in hour.rates}
    assert rates["E-mail bounce rate"] == (3, 40, 7.5)
    assert rates["E-mail complaint rate"] == (1, 40, 2.5)
    assert rates["SMS bounce rate"] == (0, 0, None)
    assert {rate.label: (rate.count, rate.of) for rate in day.rates}["E-mail bounce rate"] == (4, 41)
    html = response.content.decode()
    assert "7.50 %" in html and "(3 of 40)" in html
    # And the bounced figure links to exactly those notifications
    listed = staff.get(hour.delivery[1].url)
    assert listed.context["cl"].result_count == 3
