"""Actors of the notifications app: load by id, call one service.

Retry policy of `notification_send` (Dramatiq's Retries middleware): up to NOTIFICATION_MAX_RETRIES
retries with exponential backoff and jitter between NOTIFICATION_MIN_BACKOFF_MS and
NOTIFICATION_MAX_BACKOFF_MS. The settings are read when a retry is decided, not when this module is
imported (actor options are frozen at import), so a changed setting applies without a new actor.
Every actor's backoff stays at most eventplatform.broker.MAX_BACKOFF_MS (5 minutes): Dramatiq keeps
a delayed message unacknowledged until it is due, and RabbitMQ closes a channel holding one longer
than its consumer_timeout (30 minutes by default; dramatiq issue 827). Longer waits go through the outbox:
retry rounds (failures.notification_retries_exhausted) and sends waiting for a breaker (deferral.py).
Names come from queueing.py, where the services read them too.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from django.conf import settings
from dramatiq.middleware import CurrentMessage

from apps.notifications import actor_names
from apps.notifications.checks import send_time_limit_ms
from apps.notifications.deferral import notifications_probe
from apps.notifications.errors import NotificationBusy, ProviderRateLimitedError, ProviderTransientError
from apps.notifications.failures import notification_retries_exhausted, rate_limit_delay_ms, retry_backoff_ms
from apps.notifications.sending import notification_send
from eventplatform.broker import MAX_BACKOFF_MS

# The dead-letter and probe actors handle a provider's failure themselves (a retry round, a send
# deferred again): Dramatiq retries them only for an unexpected error, a database that is away, this
# many times with a backoff from 1 s doubling up to MAX_BACKOFF_MS (about an hour in all). The same
# count as the apply actor's default (APPLY_MAX_RETRIES), but not tied to it: tuning how long an
# apply is retried does not change these.
BOOKKEEPING_MAX_RETRIES = 20


def retry_transient(retries_so_far: int, exception: BaseException) -> bool:
    """Retry up to the configured count. Permanent failures never get here: the service marks them
    dead and returns. Unexpected errors (a database hiccup) are retried like transient ones."""
    return retries_so_far < settings.NOTIFICATION_MAX_RETRIES


@dramatiq.actor(
    queue_name=actor_names.QUEUE_NAME,
    actor_name=actor_names.DEAD_LETTER_ACTOR,
    max_retries=BOOKKEEPING_MAX_RETRIES,
    min_backoff=1000,
    max_backoff=MAX_BACKOFF_MS,
)
def notification_dead_letter(message_data: dict[str, Any], retry_info: dict[str, Any] | None = None) -> None:
    """Called by the Retries middleware (`on_retry_exhausted`) when a send will not be retried:
    schedules a retry round, or marks the notification dead past the retry horizon."""
    notification_retries_exhausted(notification_id=message_data["kwargs"]["notification_id"])


@dramatiq.actor(
    queue_name=actor_names.QUEUE_NAME,
    actor_name=actor_names.PROBE_ACTOR,
    max_retries=BOOKKEEPING_MAX_RETRIES,
    min_backoff=1000,
    max_backoff=MAX_BACKOFF_MS,
    time_limit=send_time_limit_ms(),
)
def notification_probe(channel: str) -> None:
    """The one probe of a channel whose breakers are all open: see deferral.notifications_probe."""
    notifications_probe(channel=channel, send=notification_send)


@dramatiq.actor(
    queue_name=actor_names.QUEUE_NAME,
    actor_name=actor_names.SEND_ACTOR,
    retry_when=retry_transient,
    min_backoff=settings.NOTIFICATION_MIN_BACKOFF_MS,
    max_backoff=MAX_BACKOFF_MS,
    time_limit=send_time_limit_ms(),
    on_retry_exhausted=notification_dead_letter.actor_name,
)
def notification_send_actor(notification_id: str) -> None:
    try:
        notification_send(notification_id=notification_id)
    except (ProviderTransientError, NotificationBusy) as error:
        # Retry carries the delay computed from today's settings; the service has logged the
        # failure with its error code, so Dramatiq need not log a traceback for it.
        message = CurrentMessage.get_current_message()
        retries = message.options.get("retries", 0) if message else 0
        delay = retry_backoff_ms(retries)
        if isinstance(error, ProviderRateLimitedError):  # the provider said when: Retry-After, bounded
            delay = rate_limit_delay_ms(error.retry_after)
        raise dramatiq.Retry(f"{error.code}: {error.message}", delay=delay) from error
