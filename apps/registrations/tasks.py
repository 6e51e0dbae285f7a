"""Actors of the registrations app: load by id, call one service."""

from __future__ import annotations

import dramatiq
from django.conf import settings
from dramatiq.middleware import CurrentMessage

from apps.registrations.services import registration_apply
from eventplatform import metrics


@dramatiq.actor(queue_name="registrations", actor_name="webhook_event_apply",
                max_retries=settings.APPLY_MAX_RETRIES, min_backoff=settings.APPLY_MIN_BACKOFF_MS,
                max_backoff=settings.APPLY_MAX_BACKOFF_MS)
def webhook_event_apply(event_id: str) -> None:
    message = CurrentMessage.get_current_message()
    result = registration_apply(event_id=event_id, message_id=message.message_id if message else event_id)
    metrics.REGISTRATION_EVENTS.labels(type="webhook", outcome=result.outcome).inc()
