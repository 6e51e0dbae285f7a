"""Notification lifecycle, the stories staff and registrations start: create (with its outbox
row), cancel, replay.

The rest lives by story: sending.py (claim, send, record), failures.py (the one path to `dead`,
retry rounds), deferral.py (waiting for a circuit breaker, route to wake), rescue.py (the
scheduler's sweep), classification.py (what a provider failure means), channels/ (the channels:
which kinds go by which, to whom, through which providers). The names other modules import from
here (`notification_send`, `notifications_rescue_stalled`, ...) stay importable.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.notifications import queueing
from apps.notifications.channels import channels_for, recipient_for
from apps.notifications.failures import (  # noqa: F401 - re-exported: send_reminders and tasks import them here
    notification_mark_dead,
    notification_retries_exhausted,
)
from apps.notifications.models import CLAIMABLE, Notification, NotificationReplay
from apps.notifications.rescue import notifications_rescue_stalled  # noqa: F401 - re-exported
from apps.notifications.selectors import suppression_active
from apps.notifications.sending import (  # noqa: F401 - SendResult, notification_send re-exported
    STALE_MESSAGES,
    SUPPRESSED_REASON,
    SendResult,
    notification_send,
    notification_stale_reason,
)
from eventplatform import metrics, sql
from eventplatform.logging import mask_email

log = structlog.get_logger("notifications")

Status = Notification.Status


def notification_create(
    *,
    registration: Any,
    kind: str,
    channel: str,
    dedupe_key: str = "",
    context: dict[str, Any],
    correlation_id: str = "",
    source_received_at: dt.datetime | None = None,
) -> Notification | None:
    """Create the notification and its outbox row, or return None when it already exists.

    Must run inside the caller's transaction (the change that calls for it). The unique
    constraint, not a prior read, is what makes "each (registration, kind, channel) once" hold.
    """
    try:
        with transaction.atomic():
            notification = Notification.objects.create(
                registration=registration,
                kind=kind,
                channel=channel,
                dedupe_key=dedupe_key,
                recipient=recipient_for(channel, context),
                context=context,
                correlation_id=correlation_id,
                source_received_at=source_received_at,
            )
    except IntegrityError:
        return None
    queueing.enqueue_send(notification)
    return notification


def notifications_create_missing(
    *,
    registration_id: int,
    wanted: list[tuple[str, str, dict[str, Any]]],
    correlation_id: str = "",
    source_received_at: dt.datetime | None = None,
    known_none: bool = False,
    existing: set[tuple[str, str, str]] | None = None,
    send_at_once: bool = False,
) -> list[Notification]:
    """Create, with their outbox rows, the notifications the wanted (kind, dedupe_key, state) call
    for and the registration does not have yet: two INSERTs whatever their number (no read when
    the caller knows it has none: `known_none`, a registration created in this transaction, or
    has read them already: `existing`, the (kind, channel, dedupe_key) of every row). Which
    channels each kind goes by, and to whom, is decided here (the channel registry), not by the caller.

    `send_at_once`: the caller sends them right after COMMIT (send_at_once.py); each outbox row
    then has the notification's id as its id and waits NOTIFICATION_SEND_AT_ONCE_GRACE_SECONDS,
    the safety net should the caller die before it is done.

    The caller holds the registration's row lock (registration_apply), so nobody else creates
    these kinds for it meanwhile; the unique constraint remains the guarantee.
    """
    if existing is None:
        existing = (
            set()
            if known_none
            else set(
                Notification.objects.filter(registration_id=registration_id).values_list(
                    "kind", "channel", "dedupe_key"
                )
            )
        )
    new = [
        Notification(
            registration_id=registration_id,
            kind=kind,
            channel=channel,
            dedupe_key=dedupe_key,
            recipient=recipient_for(channel, state),
            context=state,
            correlation_id=correlation_id,
            source_received_at=source_received_at,
        )
        for kind, dedupe_key, state in wanted
        for channel in channels_for(kind, state)
        if (kind, channel, dedupe_key) not in existing
    ]
    if new:
        sql.insert_many(new)
        grace = dt.timedelta(seconds=settings.NOTIFICATION_SEND_AT_ONCE_GRACE_SECONDS) if send_at_once else None
        queueing.enqueue_sends(
            [
                queueing.send_message_fields(
                    notification, delay=grace, message_id=notification.id if send_at_once else None
                )
                for notification in new
            ]
        )
    return new


def notifications_cancel_pending(*, registration: Any, kinds: tuple[str, ...]) -> int:
    """Cancel not-yet-sent notifications of these kinds (a cancelled registration gets no reminders).

    A reminder being sent right now (`sending`) is not stopped: its provider call is already out.
    """
    pending = Notification.objects.filter(registration=registration, kind__in=kinds, status__in=CLAIMABLE)
    cancelled = 0
    for notification_id, kind, channel in pending.values_list("id", "kind", "channel"):
        if Notification.objects.filter(id=notification_id, status__in=CLAIMABLE).update(
            status=Status.CANCELLED, next_attempt_at=None, deferred_at=None, updated_at=timezone.now()
        ):
            metrics.NOTIFICATIONS.labels(kind=kind, channel=channel, status=Status.CANCELLED).inc()
            cancelled += 1
    return cancelled


SUPERSEDED_MESSAGE = (
    "The registration changed again before this was sent; the newest update (or none, when "
    "the attendee was told this already or it was cancelled) states it as it is."
)


def notifications_supersede(*, registration_id: int, kind: str, keep: list[str]) -> int:
    """Cancel, with the reason `superseded`, the registration's notifications of this kind still
    waiting to be sent (pending, retrying, deferred) whose dedupe key is not in `keep`: the
    attendee gets the one message that states the registration as it now is, not a queue of
    stale ones.

    One guarded UPDATE: a row a worker claimed meanwhile (`sending`) is left alone, its provider
    call is already out. Runs in the caller's transaction (the apply, which holds the
    registration's row lock); if the process dies before COMMIT nothing changed.
    """
    cancelled = (
        Notification.objects.filter(registration_id=registration_id, kind=kind, status__in=CLAIMABLE)
        .exclude(dedupe_key__in=keep)
        .update(
            status=Status.CANCELLED,
            last_error_code="superseded",
            last_error_message=SUPERSEDED_MESSAGE,
            next_attempt_at=None,
            deferred_at=None,
            updated_at=timezone.now(),
        )
    )
    if cancelled:
        # Updates go by e-mail only (the SMS channel does not carry them); the label names the channel all the same.
        metrics.NOTIFICATIONS.labels(kind=kind, channel=Notification.Channel.EMAIL, status=Status.CANCELLED).inc(
            cancelled
        )
    return cancelled


# Named replays: what never reached the attendee goes again on request; what reached them (or was
# accepted for them) only with `include_sent`, a second message being a decision of its own.
REPLAYABLE = (Status.DEAD, Status.SUPPRESSED, Status.BOUNCED)
REPLAYABLE_IF_SENT = (Status.SENT, Status.DELIVERED, Status.COMPLAINED)


@dataclass(frozen=True)
class ReplayResult:
    """Whether a replay was queued; if it was refused for a reason staff should read, its code."""

    queued: bool
    refused: str = ""  # registration_cancelled | event_started | address_suppressed

    def __bool__(self) -> bool:
        return self.queued

    @property
    def message(self) -> str:
        return STALE_MESSAGES.get(self.refused, "").replace("Not sent", "Not replayed")


@transaction.atomic
def notification_replay(
    *,
    notification_id: uuid.UUID | str,
    reason: str,
    user: User | None = None,
    command: str = "",
    os_user: str = "",
    include_sent: bool = False,
) -> ReplayResult:
    """Staff replay: a dead, suppressed or bounced notification (or, explicitly, one sent, delivered
    or complained about) goes back to pending and is queued, and a NotificationReplay row records
    who (`user`, or `command` run by `os_user`), when and why.

    It goes to the registration's address as it is now (an update corrected a mistyped one), not to
    the one the notification was first made for.

    Refused, saying why (`ReplayResult.refused`, a code of the catalogue), when the message no longer
    makes sense (sending.notification_stale_reason): the send would be cancelled at its claim anyway;
    and while that address has an active suppression (`address_suppressed`): it would end
    `suppressed` at its claim, and staff must lift the suppression first, a decision of its own.

    The status change, the outbox row and the audit row commit together: if the process dies before
    the commit, nothing happened (no send, no audit); after it, the relay publishes the send. The
    row lock makes two staff replaying the same notification at once queue it once: the second finds
    it pending and returns False, with no audit row. The retry horizon starts again from the replay,
    so a replayed notification gets its full day of retry rounds.
    """
    reason = reason.strip()
    if not reason:
        raise ValueError("a replay needs a reason (it is kept in the audit)")
    if (user is None) == (not command):
        raise ValueError("a replay is made either by a user or by a command")
    statuses = [*REPLAYABLE, *(REPLAYABLE_IF_SENT if include_sent else ())]
    notification = (
        Notification.objects.select_for_update(of=("self",))
        .select_related("registration")
        .filter(id=notification_id, status__in=statuses)
        .first()
    )
    if notification is None:
        return ReplayResult(queued=False)
    registration = notification.registration
    recipient = (
        recipient_for(notification.channel, {"email": registration.email, "phone": registration.phone})
        or notification.recipient
    )
    refused = notification_stale_reason(notification_id=notification.id)
    if not refused and suppression_active(channel=notification.channel, address=recipient):
        refused = SUPPRESSED_REASON
    if refused:
        log.info(
            "notification.replay_refused",
            notification_id=str(notification.id),
            reason=refused,
            kind=notification.kind,
            channel=notification.channel,
        )
        return ReplayResult(queued=False, refused=refused)
    now = timezone.now()
    Notification.objects.filter(id=notification.id).update(
        status=Status.PENDING,
        recipient=recipient,
        claimed_at=None,
        next_attempt_at=None,
        deferred_at=None,
        replayed_at=now,
        updated_at=now,
    )
    queueing.enqueue_send(notification)
    actor = user.get_username() if user is not None else f"{command} (os user {os_user or 'unknown'})"
    NotificationReplay.objects.create(
        notification=notification,
        replayed_at=now,
        reason=reason,
        actor_type=NotificationReplay.Actor.USER if user is not None else NotificationReplay.Actor.COMMAND,
        user=user,
        actor=actor[:200],
        previous_status=notification.status,
        previous_error_code=notification.last_error_code,
        previous_attempts=notification.attempts,
    )
    log.info(
        "notification.replayed",
        notification_id=str(notification.id),
        previous_status=notification.status,
        actor=mask_email(actor) if "@" in actor else actor,
        kind=notification.kind,
        channel=notification.channel,
    )
    return ReplayResult(queued=True)
