"""Nothing accepted is lost: the dead letter of webhook events, re-applying it, and the sweeper.

An accepted webhook event (202) must become a registration event, or a failure staff can see and
re-apply (docs/failures.md). Three paths lead here:
- an apply whose Dramatiq retries ran out (`webhook_event_dead_letter`) or that raised an error no
  retry can fix (`webhook_event_apply`) is recorded as a FailedApply;
- a message lost on the way (RabbitMQ dropped it, the hand-off to the dead-letter actor failed) is
  found by the sweeper, run by the scheduler, and re-enqueued through the outbox;
- staff re-apply failed events (`reapply_events`, the admin action): a new outbox row in the same
  transaction as the audit record. Re-applying twice is harmless: registration_apply sees the event
  already in the log (`already_applied`) and changes nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid

import structlog
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from apps.outbox.models import OutboxMessage
from apps.outbox.services import outbox_insert, outbox_message_fields
from apps.registrations.models import ApplyReapply, FailedApply, RegistrationEvent
from apps.webhooks.apply_actor import APPLY_ACTOR
from apps.webhooks.models import WebhookEvent
from eventplatform import metrics
from eventplatform.errors import EventPlatformError, describe

log = structlog.get_logger("registrations")

MAX_ERROR_MESSAGE = 4000


class ReapplyRefused(EventPlatformError):
    """The event cannot be re-applied: it does not exist (and never failed) or was rejected."""

    code = "reapply_refused"


def _apply_actor() -> tuple[str, str]:
    """(actor name, queue name) of the apply actor: the names the webhook intake writes its first
    message with, which the actor (tasks.py) is declared with too."""
    return APPLY_ACTOR["actor_name"], APPLY_ACTOR["queue_name"]


# Message option marking a staff re-apply: only such a message can meet an unresolved FailedApply
# (the sweeper skips those events), so only it pays for the UPDATE that resolves one.
REAPPLY_OPTION = "reapply"


def _enqueue_apply(event_id: str, *, reapply: bool = False) -> OutboxMessage:
    actor_name, queue_name = _apply_actor()
    fields = outbox_message_fields(
        actor_name=actor_name, queue_name=queue_name, kwargs={"event_id": event_id}, correlation_id=event_id
    )
    if reapply:
        fields["options"] = {**fields["options"], REAPPLY_OPTION: True}
    return outbox_insert(fields)


@transaction.atomic
def failed_apply_record(*, event_id: str, error_code: str, error_message: str, attempts: int) -> FailedApply:
    """Record (or update) the failed apply of one event; a repeated failure adds its attempts.

    Called by the worker after the apply's own transaction rolled back. If the process dies before
    COMMIT, the message is not acknowledged and comes back: its next failure records it.
    """
    describe(error_code)
    now = timezone.now()
    event_id = str(uuid.UUID(str(event_id)))
    exists = WebhookEvent.objects.filter(id=event_id).exists()
    failed, created = FailedApply.objects.select_for_update().get_or_create(
        event_id=event_id,
        defaults={
            "webhook_event_id": event_id if exists else None,
            "error_code": error_code,
            "error_message": error_message[:MAX_ERROR_MESSAGE],
            "attempts": attempts,
            "first_failed_at": now,
            "last_failed_at": now,
        },
    )
    if not created:
        FailedApply.objects.filter(pk=failed.pk).update(
            error_code=error_code,
            error_message=error_message[:MAX_ERROR_MESSAGE],
            attempts=F("attempts") + attempts,
            failures=F("failures") + 1,
            last_failed_at=now,
            resolved_at=None,
        )
        failed.refresh_from_db()
    metrics.FAILED_APPLIES.labels(error_code=error_code).inc()
    log.error(
        "registration.apply_failed",
        event_id=event_id,
        error_code=error_code,
        attempts=failed.attempts,
        failures=failed.failures,
        error=error_message[:300],
    )
    return failed


def failed_apply_resolve(*, event_id: str, now: dt.datetime | None = None) -> bool:
    """Mark the event's failed apply resolved: its apply has now succeeded.

    Runs after a re-apply message's apply committed (one indexed UPDATE). If the process dies in
    between, the row stays unresolved although the event is applied; the next re-apply finds it
    `already_applied` and resolves it. An original message redelivered after its FailedApply was
    recorded (rare: the relay republished it) applies the event without resolving: re-apply it once.
    """
    resolved = FailedApply.objects.filter(event_id=event_id, resolved_at__isnull=True).update(
        resolved_at=now or timezone.now()
    )
    if resolved:
        log.info("registration.failed_apply_resolved", event_id=str(event_id))
    return bool(resolved)


@transaction.atomic
def webhook_event_reapply(
    *, event_id: str, reason: str, via: str, user: User | None = None, os_user: str = ""
) -> ApplyReapply:
    """Queue one more apply of the event through the outbox, with its audit record, in one transaction.

    Safe twice: a second apply of an applied event is `already_applied` (no change, no notification).
    If the process dies before COMMIT, neither the message nor the audit record exists.
    """
    if not reason.strip():
        raise ValueError("A reason is required to re-apply an event.")
    event_id = str(uuid.UUID(str(event_id)))
    failed = FailedApply.objects.select_for_update().filter(event_id=event_id).first()
    status = WebhookEvent.objects.filter(id=event_id).values_list("status", flat=True).first()
    if failed is None and status is None:
        raise ReapplyRefused(f"Webhook event {event_id} does not exist.")
    if status == WebhookEvent.Status.REJECTED:
        raise ReapplyRefused(f"Webhook event {event_id} was rejected; there is nothing to apply.")
    message = _enqueue_apply(event_id, reapply=True)
    now = timezone.now()
    if failed is not None:
        FailedApply.objects.filter(pk=failed.pk).update(last_reapplied_at=now)
    audit = ApplyReapply.objects.create(
        event_id=event_id,
        failed_apply=failed,
        via=via,
        user=user,
        os_user=os_user,
        reason=reason.strip(),
        outbox_message_id=message.id,
        created_at=now,
    )
    log.info(
        "registration.reapply_queued", event_id=event_id, via=via, actor=audit.actor, outbox_message_id=str(message.id)
    )
    return audit


def failed_applies_unresolved() -> list[str]:
    """Event ids of every failed apply not resolved yet (what `reapply_events --all` re-applies)."""
    return [
        str(event_id)
        for event_id in FailedApply.objects.filter(resolved_at__isnull=True)
        .order_by("first_failed_at")
        .values_list("event_id", flat=True)
    ]


def webhook_events_rescue_unapplied(*, now: dt.datetime | None = None) -> int:
    """Re-enqueue, through the outbox, accepted events that are still not applied long after their
    apply message was published; returns how many.

    Picks accepted events older than APPLY_SWEEP_AFTER_SECONDS with no RegistrationEvent and no
    unresolved FailedApply (those wait for staff), whose outbox rows are all published, the newest
    more than APPLY_SWEEP_AFTER_SECONDS ago: the message was lost (RabbitMQ lost it, or the hand-off
    to the dead-letter actor failed), or the workers are far behind, in which case the extra message
    is a no-op when it arrives. So each event gets at most one rescue per APPLY_SWEEP_AFTER_SECONDS.
    Each rescue is its own transaction; a process dying mid-way leaves the rest for the next run.
    """
    now = now or timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.APPLY_SWEEP_AFTER_SECONDS)
    candidates = [
        str(event_id)
        for event_id in (
            WebhookEvent.objects.filter(status=WebhookEvent.Status.ACCEPTED, received_at__lt=cutoff)
            .filter(~Exists(RegistrationEvent.objects.filter(webhook_event_id=OuterRef("id"))))
            .filter(~Exists(FailedApply.objects.filter(event_id=OuterRef("id"), resolved_at__isnull=True)))
            .order_by("received_at")
            .values_list("id", flat=True)[: settings.APPLY_SWEEP_BATCH_SIZE]
        )
    ]
    if not candidates:
        return 0
    actor_name, _ = _apply_actor()
    waiting: set[str] = set()
    newest_published: dict[str, dt.datetime] = {}
    for kwargs, published_at in OutboxMessage.objects.filter(
        actor_name=actor_name, kwargs__event_id__in=candidates
    ).values_list("kwargs", "published_at"):
        event_id = kwargs["event_id"]
        if published_at is None:
            waiting.add(event_id)
        elif event_id not in newest_published or published_at > newest_published[event_id]:
            newest_published[event_id] = published_at
    rescued = 0
    for event_id in candidates:
        if event_id in waiting or newest_published.get(event_id, cutoff) > cutoff:
            continue
        with transaction.atomic():
            message = _enqueue_apply(event_id)
        metrics.WEBHOOK_EVENTS_RESCUED.inc()
        log.warning(
            "registration.apply_rescued",
            event_id=event_id,
            error_code="apply_rescued",
            outbox_message_id=str(message.id),
        )
        rescued += 1
    return rescued
