"""Reads of the notifications app."""

from __future__ import annotations

import datetime as dt

from django.db.models import QuerySet

from apps.notifications.models import Notification, SchedulerHeartbeat


def notifications_to_replay(
    *,
    ids: list[str] | None = None,
    include_sent: bool = False,
    since: dt.datetime | None = None,
    kind: str | None = None,
    channel: str | None = None,
    error_code: str | None = None,
) -> QuerySet[Notification]:
    """Dead notifications matching the filters (`since` is when they last changed, i.e. died).

    Sent ones are included only with explicit ids: re-sending what was delivered is a decision
    about named messages, never the by-product of a filter.
    """
    statuses = [Notification.Status.DEAD]
    if ids and include_sent:
        statuses.append(Notification.Status.SENT)
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
