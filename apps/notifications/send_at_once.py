"""Sending what an apply just created, in the apply's own worker, with the outbox as the safety net.

Going through the relay and RabbitMQ a second time for each new notification would cost an outbox
round (select, publish, confirm, mark), a broker message and a Dramatiq dispatch: about a third of
a webhook's CPU (docs/performance.md). So the apply actor sends right after its COMMIT. Each new
notification still has its outbox row, written in the apply's transaction, with the notification's
id as its id and due only NOTIFICATION_SEND_AT_ONCE_GRACE_SECONDS later. What happens next:

- sent, dead, deferred (waits for a breaker, which has no outbox row of its own) or already done:
  the row is deleted, unpublished (a sent one by the `sent` update itself);
- a temporary failure: the row is `retrying`, and its outbox row becomes due after the first
  backoff; from there the `notification_send` actor and its Retries middleware take over;
- the worker dies before or during the send: the row becomes due after the grace and the relay
  publishes it, as if this module did not exist (a send cut off mid-call is re-claimed after the
  claim timeout: the documented duplicate window of sending.py, no wider).

The claim in sending.py stays the only guard against two sends: a grace too short for a slow
provider costs one extra message, which finds the row claimed and retries until it is done.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

import structlog

from apps.notifications.errors import NotificationBusy, ProviderRateLimitedError, ProviderTransientError
from apps.notifications.failures import rate_limit_delay_ms, retry_backoff_ms
from apps.notifications.sending import notification_send
from apps.outbox.services import outbox_discard, outbox_due_in

log = structlog.get_logger("notifications")


def notifications_send_at_once(*, notification_ids: Iterable[uuid.UUID]) -> dict[str, int]:
    """Send each one now; returns how many ended which way (sent, dead, deferred, skipped, retrying,
    failed). Never raises: whatever goes wrong, the outbox row carries the send on."""
    outcomes: dict[str, int] = {}
    for notification_id in notification_ids:
        outcome = _send_one(str(notification_id))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def _send_one(notification_id: str) -> str:
    try:
        outcome = notification_send(notification_id=notification_id).outcome
    except (ProviderTransientError, NotificationBusy) as error:
        # Logged by sending.py with its error code; the actor retries from here (a rate limit: when asked).
        delay = (
            rate_limit_delay_ms(error.retry_after)
            if isinstance(error, ProviderRateLimitedError)
            else retry_backoff_ms(0)
        )
        outbox_due_in(notification_id, dt.timedelta(milliseconds=delay))
        return "retrying"
    except Exception as error:  # noqa: BLE001 - a bug or a database hiccup: the actor's retries take it
        log.error(
            "notification.send_at_once_failed",
            error_code="send_at_once_failed",
            notification_id=notification_id,
            error=f"{type(error).__name__}: {error}"[:300],
        )
        try:
            outbox_due_in(notification_id, dt.timedelta(0))
        except Exception:  # noqa: BLE001 - the database is away: the row falls due after the grace
            pass
        return "failed"
    if outcome != "sent":  # a sent one's row went with its `sent` update (sending.py)
        outbox_discard(notification_id)
    return outcome
