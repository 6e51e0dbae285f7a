"""Actors of the notifications app: load by id, call one service."""

from __future__ import annotations

from typing import Any

import dramatiq
from django.conf import settings

from apps.notifications.errors import NotificationBusy, ProviderTransientError
from apps.notifications.models import Notification
from apps.notifications.services import notification_mark_dead, notification_send


def retry_transient(retries_so_far: int, exception: BaseException) -> bool:
    """Retry transient provider errors (and a busy claim) up to the configured count; nothing else."""
    transient = isinstance(exception, (ProviderTransientError, NotificationBusy))
    return transient and retries_so_far < settings.NOTIFICATION_MAX_RETRIES


@dramatiq.actor(queue_name="notifications", actor_name="notification_dead_letter",
                max_retries=settings.APPLY_MAX_RETRIES)
def notification_dead_letter(message_data: dict[str, Any], retry_info: dict[str, Any] | None = None) -> None:
    """Called by the Retries middleware (`on_retry_exhausted`) when a send will not be retried."""
    notification_id = message_data["kwargs"]["notification_id"]
    last = Notification.objects.filter(id=notification_id).values("last_error_code", "last_error_message").first()
    notification_mark_dead(
        notification_id=notification_id,
        error_code=(last or {}).get("last_error_code") or "retries_exhausted",
        error_message=(last or {}).get("last_error_message") or "Retries exhausted.",
    )


@dramatiq.actor(queue_name="notifications", actor_name="notification_send", retry_when=retry_transient,
                min_backoff=settings.NOTIFICATION_MIN_BACKOFF_MS, max_backoff=settings.NOTIFICATION_MAX_BACKOFF_MS,
                on_retry_exhausted="notification_dead_letter")
def notification_send_actor(notification_id: str) -> None:
    notification_send(notification_id=notification_id)
