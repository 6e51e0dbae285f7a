"""The scheduler's sweep (`send_reminders`, every run): re-queue the notifications that lost their
message, whichever way they lost it.

Messages can be lost where the outbox does not cover them: Dramatiq publishes a retry (and the
hand-off to the dead-letter actor) to RabbitMQ directly, a published message can be purged, a
probe or a wake-up can die with its process. Each rescue re-queues through the outbox; a message
that was only slow costs one extra message, which the claim turns into a no-op.
"""

from __future__ import annotations

import datetime as dt

import structlog
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, TextField
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from apps.notifications import actor_names, queueing
from apps.notifications.deferral import notifications_rescue_deferred
from apps.notifications.failures import notification_retries_exhausted
from apps.notifications.models import Notification
from apps.outbox.models import OutboxMessage
from eventplatform import metrics, sql

log = structlog.get_logger("notifications")

Status = Notification.Status
# At most this many lost `pending` rows are re-queued per sweep (one INSERT); the next sweep takes the rest.
RESCUE_BATCH = 1000


def _rescue_pending(now: dt.datetime) -> int:
    """`pending` notifications whose message was published long ago and never consumed (lost in
    RabbitMQ, or purged): no outbox row of theirs is still waiting, and nothing happened to them
    for NOTIFICATION_PENDING_RESCUE_AFTER_SECONDS. Re-queued in one batch; a message that was only
    slow costs one extra message, which the claim turns into a no-op."""
    quiet = now - dt.timedelta(seconds=settings.NOTIFICATION_PENDING_RESCUE_AFTER_SECONDS)
    waiting = OutboxMessage.objects.annotate(notification_id=KT("kwargs__notification_id")).filter(
        Q(published_at__isnull=True) | Q(published_at__gte=quiet),
        actor_name=actor_names.SEND_ACTOR,
        notification_id=Cast(OuterRef("id"), output_field=TextField()),
    )
    with transaction.atomic():
        lost = list(
            Notification.objects.select_for_update(skip_locked=True)
            .filter(
                status=Status.PENDING,
                deferred_at__isnull=True,
                updated_at__lt=quiet,
            )
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=quiet))
            .filter(~Exists(waiting))[:RESCUE_BATCH]
        )
        if lost:
            Notification.objects.filter(id__in=[n.id for n in lost]).update(updated_at=now)
            queueing.enqueue_sends([queueing.send_message_fields(n) for n in lost])
    for notification in lost:
        log.warning(
            "notification.pending_rescued",
            notification_id=str(notification.id),
            error_code="retries_exhausted",
            kind=notification.kind,
            channel=notification.channel,
        )
    metrics.NOTIFICATIONS_RESCUED.labels(reason="pending_lost").inc(len(lost))
    return len(lost)


# A retry is never more than 5 minutes away (the backoff cap): a row quiet for three times that
# has lost its message.
STALLED_AFTER = dt.timedelta(minutes=15)


def notifications_rescue_stalled(*, now: dt.datetime | None = None) -> int:
    """The scheduler's sweep (`send_reminders`, every run): re-queue what lost its message.

    - `retrying` rows quiet for STALLED_AFTER and `sending` rows whose claim went stale: Dramatiq
      publishes a retry (and the hand-off to the dead-letter actor) to RabbitMQ directly, not
      through the outbox, so a broker failure at that instant loses it; these get a retry round,
      or are dead past the horizon;
    - `pending` rows whose message was published and lost (see _rescue_pending);
    - sends waiting for a breaker that lets sends through again (or whose probe was lost).
    Returns how many were rescued; eventplatform_notifications_rescued_total{reason} counts them.
    """
    now = now or sql.database_now()  # claimed_at is the database's time (sending._claim)
    quiet = now - STALLED_AFTER
    stale_claim = quiet - dt.timedelta(seconds=settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS)
    stalled = Notification.objects.filter(
        Q(status=Status.RETRYING, updated_at__lt=quiet, deferred_at__isnull=True)
        | Q(status=Status.SENDING, claimed_at__lt=stale_claim),
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lt=quiet),
    ).values_list("id", "status")
    rescued = 0
    for notification_id, status in list(stalled):
        if notification_retries_exhausted(notification_id=str(notification_id)) in ("rescheduled", "dead"):
            log.warning(
                "notification.stalled_rescued", notification_id=str(notification_id), error_code="retries_exhausted"
            )
            metrics.NOTIFICATIONS_RESCUED.labels(reason=f"stalled_{status}").inc()
            rescued += 1
    rescued += _rescue_pending(now)
    rescued += notifications_rescue_deferred(now=now)
    return rescued
