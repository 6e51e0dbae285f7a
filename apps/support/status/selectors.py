"""Reads behind /admin/status/: each figure from where it is true (PostgreSQL rows, the broker).

Every query here is answered by an index at a million rows (docs/performance.md): counts over a
time window use (status, updated_at) and received_at; the chart groups the last day's attempts
by minute (portable: TruncMinute works on SQLite and PostgreSQL) and folds minutes into 5-minute
buckets in Python. Nothing here writes; a broker that does not answer is shown as such.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlencode

import dramatiq
from django.conf import settings
from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from apps.notifications.models import CircuitBreaker, Notification, NotificationAttempt
from apps.notifications.selectors import scheduler_heartbeats
from apps.outbox.relay import outbox_backlog
from apps.registrations.models import FailedApply
from apps.webhooks.models import WebhookEvent
from eventplatform.broker import pipeline_queues
from eventplatform.observability import RabbitmqQueueCollector

BUCKET = dt.timedelta(minutes=5)
CHART_SPAN = dt.timedelta(hours=24)
WINDOWS = (("last hour", dt.timedelta(hours=1)), ("last day", dt.timedelta(days=1)))


@dataclass(frozen=True)
class QueueDepth:
    name: str
    messages: int
    consumers: int | None  # None: the in-process broker has no consumers to count


@dataclass(frozen=True)
class Broker:
    kind: str  # "rabbitmq" or "embedded broker"
    reachable: bool
    queues: list[QueueDepth]


@dataclass(frozen=True)
class BreakerRow:
    provider: str
    state: str  # whatever is stored: closed, open, half_open, or a state added later
    since: dt.datetime | None
    consecutive_failures: int
    reason: str = ""  # why a misconfigured breaker is open (error code and the provider's reply)


@dataclass(frozen=True)
class SchedulerRow:
    name: str
    last_run_at: dt.datetime | None
    duration_ms: int
    last_error: str
    stale: bool


@dataclass(frozen=True)
class Figure:
    label: str
    count: int
    url: str | None


@dataclass(frozen=True)
class Rate:
    """`count` of `of` (e.g. e-mails bounced of e-mails handed over); `percent` None when `of` is 0."""

    label: str
    count: int
    of: int

    @property
    def percent(self) -> float | None:
        return 100.0 * self.count / self.of if self.of else None


@dataclass(frozen=True)
class Window:
    label: str
    since: dt.datetime
    webhooks: list[Figure]
    notifications: list[Figure]
    dead_by_code: list[Figure]
    failed_applies: Figure
    # After `sent` (CONTRACT section 8): what the mail systems and carriers reported, and the rates.
    delivery: list[Figure] = field(default_factory=list)
    rates: list[Rate] = field(default_factory=list)


@dataclass(frozen=True)
class ChartBucket:
    start: dt.datetime
    sent: int
    failed: int


@dataclass(frozen=True)
class PipelineStatus:
    now: dt.datetime
    outbox_due: int
    outbox_oldest_age_seconds: float
    broker: Broker
    breakers: list[BreakerRow]
    scheduler: list[SchedulerRow]
    scheduler_stale_after_seconds: int
    windows: list[Window]
    chart: list[ChartBucket] = field(default_factory=list)


def pipeline_status(*, now: dt.datetime | None = None) -> PipelineStatus:
    now = now or timezone.now()
    due, oldest_age = outbox_backlog()
    stale_after = settings.STATUS_SCHEDULER_STALE_SECONDS
    return PipelineStatus(
        now=now,
        outbox_due=due,
        outbox_oldest_age_seconds=oldest_age,
        broker=broker_queue_depths(),
        breakers=circuit_breakers(),
        scheduler=scheduler_runs(now=now, stale_after_seconds=stale_after),
        scheduler_stale_after_seconds=stale_after,
        windows=[window_figures(label=label, since=now - span) for label, span in WINDOWS],
        chart=sent_and_failed_per_bucket(now=now),
    )


_collector: tuple[str, RabbitmqQueueCollector] | None = None  # (BROKER_URL it was built for, collector)
_collector_lock = threading.Lock()


def broker_queue_depths() -> Broker:
    """Depths of every pipeline queue with its delay (.DQ) and dead-letter (.XQ) companion.

    RabbitMQ: through the same collector that exports the depth metrics (passive declares,
    cached a few seconds, so reloading the page costs the broker nothing). Embedded mode: the
    in-process StubBroker's queues, which only the process running the worker has filled.
    """
    if settings.EMBEDDED_BROKER:
        broker = dramatiq.get_broker()
        queues = getattr(broker, "queues", {})
        dead = getattr(broker, "dead_letters_by_queue", {})
        rows = [QueueDepth(name, queue.qsize(), None) for name, queue in sorted(queues.items())]
        rows += [QueueDepth(f"{name}.XQ", len(messages), None) for name, messages in sorted(dead.items())]
        return Broker(kind="embedded broker", reachable=True, queues=sorted(rows, key=lambda row: row.name))
    global _collector
    with _collector_lock:
        if _collector is None or _collector[0] != settings.BROKER_URL:
            _collector = (
                settings.BROKER_URL,
                RabbitmqQueueCollector(settings.BROKER_URL, pipeline_queues(), ttl=5.0),
            )
        collector = _collector[1]
    depths, up = collector.snapshot()
    queues = [QueueDepth(name, messages, consumers) for name, (messages, consumers) in sorted(depths.items())]
    return Broker(kind="rabbitmq", reachable=up, queues=queues)


def circuit_breakers() -> list[BreakerRow]:
    """Since when: `opened_at` while not closed (when the trouble began), else the last change."""
    return [
        BreakerRow(
            provider=breaker.provider,
            state=breaker.state,
            since=breaker.opened_at
            if breaker.state != CircuitBreaker.State.CLOSED and breaker.opened_at
            else breaker.updated_at,
            consecutive_failures=breaker.consecutive_failures,
            reason=breaker.reason,
        )
        for breaker in CircuitBreaker.objects.order_by("provider")
    ]


def scheduler_runs(*, now: dt.datetime, stale_after_seconds: int) -> list[SchedulerRow]:
    rows = []
    for heartbeat in scheduler_heartbeats():
        last = heartbeat.last_finished_at or heartbeat.last_started_at
        rows.append(
            SchedulerRow(
                name=heartbeat.name,
                last_run_at=last,
                duration_ms=heartbeat.last_duration_ms,
                last_error=heartbeat.last_error,
                stale=last is None or (now - last).total_seconds() > stale_after_seconds,
            )
        )
    return rows


def _changelist(viewname: str, **params: str) -> str | None:
    """The filtered admin list, or None when that admin is not registered (nothing to link to)."""
    try:
        return f"{reverse(viewname)}?{urlencode(params)}"
    except NoReverseMatch:
        return None


def window_figures(*, label: str, since: dt.datetime) -> Window:
    since_param = since.isoformat()
    webhook_counts = dict(
        WebhookEvent.objects.filter(received_at__gte=since).values_list("status").annotate(n=Count("id")).order_by()
    )
    webhooks = [
        Figure(
            status.label,
            webhook_counts.get(status.value, 0),
            _changelist(
                "admin:webhooks_webhookevent_changelist", status__exact=status.value, received_at__gte=since_param
            ),
        )
        for status in (WebhookEvent.Status.ACCEPTED, WebhookEvent.Status.REJECTED)
    ]
    # One pass over the (status, updated_at) index: updated_at is when the row reached its status.
    status_rows = (
        Notification.objects.filter(
            status__in=[*_COUNTED, *_DELIVERY],
            updated_at__gte=since,
        )
        .values_list("status", "channel", "last_error_code")
        .annotate(n=Count("id"))
        .order_by()
    )
    by_status: dict[str, int] = {}
    by_channel: dict[tuple[str, str], int] = {}
    dead_by_code: dict[str, int] = {}
    for status, channel, code, count in status_rows:
        by_status[status] = by_status.get(status, 0) + count
        by_channel[(status, channel)] = by_channel.get((status, channel), 0) + count
        if status == Notification.Status.DEAD:
            dead_by_code[code] = dead_by_code.get(code, 0) + count

    def by_status_figures(statuses: Iterable[Notification.Status]) -> list[Figure]:
        return [
            Figure(
                status.label,
                by_status.get(status.value, 0),
                _changelist(
                    "admin:notifications_notification_changelist",
                    status__exact=status.value,
                    updated_at__gte=since_param,
                ),
            )
            for status in statuses
        ]

    notifications, delivery = by_status_figures(_COUNTED), by_status_figures(_DELIVERY)
    dead = [
        Figure(
            code or "(no code)",
            count,
            _changelist(
                "admin:notifications_notification_changelist",
                status__exact=Notification.Status.DEAD,
                last_error_code__exact=code,
                updated_at__gte=since_param,
            ),
        )
        for code, count in sorted(dead_by_code.items(), key=lambda item: (-item[1], item[0]))
    ]
    failed_applies = Figure(
        "failed applies (unresolved)",
        FailedApply.objects.filter(resolved_at__isnull=True, last_failed_at__gte=since).count(),
        _changelist(
            "admin:registrations_failedapply_changelist", resolved_at__isnull="True", last_failed_at__gte=since_param
        ),
    )
    return Window(
        label=label,
        since=since,
        webhooks=webhooks,
        notifications=notifications,
        dead_by_code=dead,
        failed_applies=failed_applies,
        delivery=delivery,
        rates=delivery_rates(by_channel),
    )


_COUNTED = (Notification.Status.SENT, Notification.Status.RETRYING, Notification.Status.DEAD)
_DELIVERY = (
    Notification.Status.DELIVERED,
    Notification.Status.BOUNCED,
    Notification.Status.COMPLAINED,
    Notification.Status.SUPPRESSED,
)
# Handed over to a provider: `sent` and whatever a report moved it on to.
_HANDED_OVER = (
    Notification.Status.SENT,
    Notification.Status.DELIVERED,
    Notification.Status.BOUNCED,
    Notification.Status.COMPLAINED,
)


_CHANNEL_LABEL = {Notification.Channel.EMAIL: "E-mail", Notification.Channel.SMS: "SMS"}


def delivery_rates(by_channel: dict[tuple[str, str], int]) -> list[Rate]:
    """Bounce and complaint rates per channel over the window, from the counts the window already
    read (no query of their own): of the messages handed over whose latest status came in the
    window, how many ended bounced or complained. A message sent yesterday and bounced now counts
    in today's window, as the alert rules' counters do (deploy/prometheus/alerts.yml)."""
    rates = []
    for channel in Notification.Channel:
        handed_over = sum(by_channel.get((status.value, channel.value), 0) for status in _HANDED_OVER)
        bounced = by_channel.get((Notification.Status.BOUNCED, channel), 0)
        rates.append(Rate(f"{_CHANNEL_LABEL[channel]} bounce rate", bounced, handed_over))
        if channel == Notification.Channel.EMAIL:  # complaints are an e-mail thing (ARF, ESP spam reports)
            rates.append(
                Rate("E-mail complaint rate", by_channel.get((Notification.Status.COMPLAINED, channel), 0), handed_over)
            )
    return rates


def chart_start(now: dt.datetime) -> dt.datetime:
    """The first bucket's start: 24 hours of whole 5-minute buckets, the last one holding `now`."""
    floored = now.replace(second=0, microsecond=0) - dt.timedelta(minutes=now.minute % 5)
    return floored + BUCKET - CHART_SPAN


def sent_and_failed_per_bucket(*, now: dt.datetime) -> list[ChartBucket]:
    """Attempts per 5 minutes over 24 hours: sent, and failed (transient or permanent errors)."""
    start = chart_start(now)
    count = int(CHART_SPAN / BUCKET)
    sent, failed = [0] * count, [0] * count
    rows = (
        NotificationAttempt.objects.filter(started_at__gte=start)
        .annotate(minute=TruncMinute("started_at"))
        .values_list("minute", "outcome")
        .annotate(n=Count("id"))
        .order_by()
    )
    for minute, outcome, n in rows:
        index = int((minute - start) / BUCKET)
        if not 0 <= index < count:
            continue  # an attempt stamped in the future (clock skew): not on this chart
        if outcome == NotificationAttempt.Outcome.SENT:
            sent[index] += n
        else:
            failed[index] += n
    return [ChartBucket(start=start + i * BUCKET, sent=sent[i], failed=failed[i]) for i in range(count)]
