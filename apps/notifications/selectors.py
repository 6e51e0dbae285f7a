"""Reads of the notifications app."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Count, QuerySet

from apps.notifications.models import Notification, SchedulerHeartbeat, Suppression
from eventplatform.addresses import email_key, normalise_phone


def notifications_to_replay(
    *,
    ids: list[str] | None = None,
    include_sent: bool = False,
    since: dt.datetime | None = None,
    kind: str | None = None,
    channel: str | None = None,
    error_code: str | None = None,
) -> QuerySet[Notification]:
    """Dead notifications matching the filters (`since` is when they last changed, i.e. died); with
    explicit ids also suppressed and bounced ones (services.REPLAYABLE).

    Sent, delivered and complained-about ones are included only with explicit ids and
    `include_sent`: re-sending what reached the attendee is a decision about named messages, never
    the by-product of a filter.
    """
    Status = Notification.Status
    statuses = [Status.DEAD]
    if ids:
        statuses += [Status.SUPPRESSED, Status.BOUNCED]
        if include_sent:
            statuses += [Status.SENT, Status.DELIVERED, Status.COMPLAINED]
    notifications = Notification.objects.filter(status__in=statuses)
    if ids:
        notifications = notifications.filter(id__in=ids)
    if since:
        notifications = notifications.filter(updated_at__gte=since)
    if kind:
        notifications = notifications.filter(kind=kind)
    if channel:
        notifications = notifications.filter(channel=channel)
    if error_code:
        notifications = notifications.filter(last_error_code=error_code)
    return notifications.select_related("registration").order_by("updated_at")


def scheduler_heartbeats() -> list[SchedulerHeartbeat]:
    """Every scheduler job's last run, for the status page (empty until the scheduler first ran)."""
    return list(SchedulerHeartbeat.objects.order_by("name"))


def notification_replay_summary(notifications: QuerySet[Notification]) -> dict[str, Any]:
    """What a replay confirmation page shows: how many, and of which kinds, channels and statuses.

    One GROUP BY, not a walk over the rows: "every row matching the filters" may be thousands.
    """
    groups = list(
        notifications.order_by()
        .values("kind", "channel", "status")
        .annotate(count=Count("id"))
        .order_by("kind", "channel", "status")
    )
    return {"total": sum(group["count"] for group in groups), "groups": groups}


def notifications_of_registration(*, registration_id: int) -> list[Notification]:
    """A registration's notifications with every attempt, delivery report and replay (the attendee's story)."""
    return list(
        Notification.objects.filter(registration_id=registration_id)
        .defer("context")
        .prefetch_related("attempt_log", "reports", "replays")
        .order_by("created_at")
    )


def suppression_address(*, channel: str, address: str) -> str:
    """The form a suppressed address is stored and compared in: an e-mail lower-cased whole (a
    mailbox that bounced under one spelling of its local part bounces under every other), a
    number in E.164."""
    return email_key(address) if channel == Notification.Channel.EMAIL else normalise_phone(address)


def suppression_active(*, channel: str, address: str) -> Suppression | None:
    """The active suppression of this address or number, if any (one lookup of the partial unique
    index `suppression_one_active_per_address`)."""
    return Suppression.objects.filter(
        channel=channel, address=suppression_address(channel=channel, address=address), lifted_at__isnull=True
    ).first()
