"""After `sent`: what the mail system or the carrier reports later (CONTRACT section 8), and the
Suppression list it feeds.

Every report (a DSN, an ARF abuse report, an ESP tracking event, an SMS status callback, a refusal
at hand-over) reaches the notification through one service, `notification_report_record`, which
keeps it as a history row, moves the status forward only (sent < delivered < bounced < complained)
with a guarded UPDATE, and suppresses the address on a permanent bounce or a complaint, all in one
transaction. The callers (the bounce receiver, the ESP and SMS webhooks, the sending worker) answer
their reporter ("250", "200") only after it returned, so what they acknowledged is committed.

Order does not matter: the status a set of reports leaves is the highest rank among them, whatever
order they arrive in (tests/notifications/test_delivery_reports.py proves it with hypothesis). A report
can outrun our own `sent` (an SMS callback before the send's write committed; a DSN in the same
second): it is kept unapplied and the scheduler applies it once the notification is sent
(`notification_reports_apply_pending`, a job of `send_reminders`).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import structlog
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.utils import timezone

from apps.notifications.models import Notification, NotificationReport, Suppression
from apps.notifications.selectors import suppression_active, suppression_address
from eventplatform import metrics, sql

log = structlog.get_logger("notifications.delivery")

Status = Notification.Status

__all__ = [
    "DeliveryReport",
    "ReportOutcome",
    "ReportResult",
    "notification_refused_at_handover",
    "notification_report_record",
    "notification_reports_apply_pending",
    "suppression_active",
    "suppression_add",
    "suppression_lift",
]


class ReportOutcome(StrEnum):
    DELIVERED = "delivered"
    DELAYED = "delayed"  # history only: the status stays
    BOUNCED = "bounced"
    COMPLAINED = "complained"


@dataclass(frozen=True)
class DeliveryReport:
    """What one report said, parsed by its receiver.

    `source`: dsn, arf, bounce_text, smtp, esp:<name>, sms_callback, sms_api. `permanent`: a
    permanent failure (5.x.x; SMS 30005/30006), which suppresses the address. `status_code`: the
    remote status ("5.1.1", "30005", an ESP's reason); `diagnostic`: its text ("smtp; 550 5.1.1 User
    unknown"). `details`: the report's fields as it gave them (DSN Action/Status/Diagnostic-Code/
    Remote-MTA, the ESP event type, the SMS status and ErrorCode). `dedupe_key`: the same report
    delivered twice (an MTA retrying after a lost "250", a provider's retried callback) is kept once.
    """

    source: str
    outcome: ReportOutcome
    permanent: bool
    status_code: str
    diagnostic: str
    reported_at: dt.datetime | None
    details: dict[str, Any] = field(default_factory=dict)
    dedupe_key: str = ""


@dataclass(frozen=True)
class ReportResult:
    """`found`: the report named a notification of ours. `status`: its status afterwards.
    `changed`: this report moved it. `suppressed`: the address is suppressed because of this report
    (a new Suppression, or the one already active)."""

    found: bool
    status: str = ""
    changed: bool = False
    suppressed: bool = False


# The forward order of the statuses a report may move; any other status is left alone: unsent
# ones (pending, retrying, sending) wait for our `sent`, and suppressed, dead or cancelled were
# never handed over by this send.
_RANK = {Status.SENT: 0, Status.DELIVERED: 1, Status.BOUNCED: 2, Status.COMPLAINED: 3}
_TARGET = {
    ReportOutcome.DELIVERED: Status.DELIVERED,
    ReportOutcome.BOUNCED: Status.BOUNCED,
    ReportOutcome.COMPLAINED: Status.COMPLAINED,
}
WAITING_FOR_SENT = (Status.PENDING, Status.RETRYING, Status.SENDING)
_ERROR_MESSAGE_MAX = 2000


@transaction.atomic
def notification_report_record(
    *,
    report: DeliveryReport,
    notification_id: uuid.UUID | str | None = None,
    provider_message_id: str | None = None,
    channel: str | None = None,
) -> ReportResult:
    """Keep the report as a history row of the notification (by its id, or by the id the provider
    returned at send, optionally within one channel) and apply it (see `_apply`).

    The notification's row lock serialises the reports about one message; a duplicate (same
    `dedupe_key`) is kept once by the unique constraint (`_insert_once`). If the process dies
    before COMMIT nothing was written and the reporter, which got no answer, reports again; if it
    dies after COMMIT but before the reporter got its answer, the reporter reports again and the
    dedupe key makes it one row (a report without a key is then kept twice, which changes no
    status: the rank is the same).

    A report for a notification not sent yet is kept unapplied (`applied=False`) and applied by
    the scheduler once the send is recorded.
    """
    notifications = Notification.objects.select_for_update().only(
        "id", "kind", "channel", "status", "recipient", "registration_id"
    )
    if notification_id is not None:
        notifications = notifications.filter(id=notification_id)
    elif provider_message_id:
        notifications = notifications.filter(provider_message_id=provider_message_id)
    else:
        raise ValueError("a report names its notification by id or by provider message id")
    if channel:
        notifications = notifications.filter(channel=channel)
    notification = notifications.first()
    metrics.NOTIFICATION_REPORTS.labels(
        channel=notification.channel if notification else (channel or "unknown"),
        source=report.source,
        outcome=report.outcome,
    ).inc()
    if notification is None:
        log.info(
            "notification.report_unknown",
            source=report.source,
            outcome=str(report.outcome),
            notification_id=str(notification_id or ""),
            provider_message_id=provider_message_id or "",
        )
        return ReportResult(found=False)
    waiting = notification.status in WAITING_FOR_SENT
    row = NotificationReport(
        notification_id=notification.id,
        source=report.source,
        outcome=report.outcome,
        permanent=report.permanent,
        status_code=report.status_code[:64],
        diagnostic=report.diagnostic,
        details=report.details,
        reported_at=report.reported_at,
        received_at=timezone.now(),
        applied=not waiting,
        dedupe_key=report.dedupe_key[:255],
    )
    row.id = _insert_once(row)
    if row.id is None:
        log.info("notification.report_duplicate", notification_id=str(notification.id), source=report.source)
        return ReportResult(found=True, status=notification.status)
    if waiting:
        log.info(
            "notification.report_waits_for_sent",
            notification_id=str(notification.id),
            source=report.source,
            outcome=str(report.outcome),
            status=notification.status,
        )
        return ReportResult(found=True, status=notification.status)
    return _apply(notification, row)


def _apply(notification: Notification, report: NotificationReport) -> ReportResult:
    """Move the notification forward to the report's status, if that is a step forward, and
    suppress the address on a permanent bounce or a complaint. The caller holds the row lock; the
    UPDATE is guarded all the same (`WHERE status IN <lower ranks>`), so no path can move it back.

    A bounce or complaint sets last_error_code/message to what the remote side said (`5.1.1`,
    `smtp; 550 5.1.1 User unknown`). A report about a notification that is dead, cancelled or
    suppressed is history only: this send never reached anyone, so it suppresses nothing.
    """
    status = notification.status
    if status not in _RANK:
        return ReportResult(found=True, status=status)
    target = _TARGET.get(ReportOutcome(report.outcome))
    changed = False
    if target is not None and _RANK[target] > _RANK[Status(status)]:
        fields: dict[str, Any] = {}
        if target != Status.DELIVERED:
            fields = {
                "last_error_code": (report.status_code or report.outcome)[:64],
                "last_error_message": report.diagnostic[:_ERROR_MESSAGE_MAX],
            }
        lower = [rank_status for rank_status, rank in _RANK.items() if rank < _RANK[target]]
        changed = bool(
            Notification.objects.filter(id=notification.id, status__in=lower).update(
                status=target, updated_at=timezone.now(), **fields
            )
        )
        if changed:
            status = target
            metrics.NOTIFICATIONS.labels(kind=notification.kind, channel=notification.channel, status=target).inc()
    suppressed = False
    reason = _suppression_reason(report)
    if reason:
        suppression_add(
            channel=notification.channel,
            address=notification.recipient,
            reason=reason,
            notification_id=notification.id,
            source=report.source,
            note=" ".join(part for part in (report.status_code, report.diagnostic) if part)[:_ERROR_MESSAGE_MAX],
        )
        suppressed = True
    log.info(
        "notification.report_applied",
        notification_id=str(notification.id),
        channel=notification.channel,
        source=report.source,
        outcome=report.outcome,
        status_code=report.status_code,
        status=status,
        changed=changed,
        suppressed=suppressed,
    )
    return ReportResult(found=True, status=status, changed=changed, suppressed=suppressed)


def _suppression_reason(report: NotificationReport) -> str:
    if report.outcome == ReportOutcome.COMPLAINED:
        return Suppression.Reason.COMPLAINED
    if report.outcome == ReportOutcome.BOUNCED and report.permanent:
        return Suppression.Reason.BOUNCED
    return ""


@transaction.atomic
def notification_refused_at_handover(
    *, notification_id: uuid.UUID | str, claim: int, report: DeliveryReport, opted_out: bool = False
) -> bool:
    """The recipient's side refused the address for good while we handed the message over (550 5.1.1
    at RCPT, an ESP's refusal, Twilio's invalid number or STOP): a bounce at once, like the same
    refusal reported an hour later. One transaction: the notification leaves `sending` (fenced by
    the claim's attempt number, as every end of a send) for `bounced`, or `suppressed` when the
    number opted out (`opted_out`: the classification's recipient_opted_out); the report is kept
    as its history row; the address is suppressed (reason `bounced` or `opted_out`). Returns False,
    changing nothing, when the claim was taken over.

    A crash before COMMIT leaves the row `sending`: the claim times out, the rescue sweep sends it
    again, and the recipient's side refuses again (nothing reached anyone).
    """
    status = Status.SUPPRESSED if opted_out else Status.BOUNCED
    updated = Notification.objects.filter(id=notification_id, status=Status.SENDING, attempts=claim).update(
        status=status,
        last_error_code=(report.status_code or report.outcome)[:64],
        last_error_message=report.diagnostic[:_ERROR_MESSAGE_MAX],
        next_attempt_at=None,
        deferred_at=None,
        updated_at=timezone.now(),
    )
    if not updated:
        return False
    notification = Notification.objects.only("id", "kind", "channel", "recipient").get(id=notification_id)
    NotificationReport.objects.create(
        notification_id=notification.id,
        source=report.source,
        outcome=report.outcome,
        permanent=True,
        status_code=report.status_code[:64],
        diagnostic=report.diagnostic,
        details=report.details,
        reported_at=report.reported_at,
        received_at=timezone.now(),
        applied=True,
        dedupe_key=report.dedupe_key[:255],
    )
    suppression_add(
        channel=notification.channel,
        address=notification.recipient,
        reason=Suppression.Reason.OPTED_OUT if opted_out else Suppression.Reason.BOUNCED,
        notification_id=notification.id,
        source=report.source,
        note=" ".join(part for part in (report.status_code, report.diagnostic) if part)[:_ERROR_MESSAGE_MAX],
    )
    metrics.NOTIFICATION_REPORTS.labels(
        channel=notification.channel, source=report.source, outcome=report.outcome
    ).inc()
    metrics.NOTIFICATIONS.labels(kind=notification.kind, channel=notification.channel, status=status).inc()
    log.info(
        "notification.refused_at_handover",
        notification_id=str(notification.id),
        channel=notification.channel,
        source=report.source,
        status_code=report.status_code,
        status=status,
    )
    return True


def _insert_once(obj: NotificationReport | Suppression) -> int | None:
    """`INSERT … ON CONFLICT DO NOTHING RETURNING id`: the new row's id, or None when a unique
    constraint already holds its twin (a report delivered twice, an address suppressed already).
    One round trip, and a conflict is no error: the caller's transaction goes on without the
    savepoint (two more round trips) that catching an IntegrityError would need. PostgreSQL waits
    for a concurrent transaction inserting the twin, then skips; SQLite (3.35+) says the same."""
    values: list[Any] = sql.values(obj)  # each field prepared for the database, as save() would
    with connection.cursor() as cursor:
        cursor.execute(f"{sql.insert_statement(type(obj))} ON CONFLICT DO NOTHING RETURNING id", values)
        row = cursor.fetchone()
    return int(row[0]) if row else None


def notification_reports_apply_pending(*, limit: int = 500) -> dict[str, int]:
    """The scheduler's job: apply the reports that arrived before their notification's `sent` was
    recorded, now that it is (or that it ended some other way: then they are history only).

    One transaction per report, each locking its notification like notification_report_record: if
    the process dies mid-way, what is committed is applied and marked so, the rest waits for the
    next round. The read uses the partial index on unapplied rows (there are few, briefly).
    """
    pending = list(
        NotificationReport.objects.filter(applied=False)
        .exclude(notification__status__in=WAITING_FOR_SENT)
        .order_by("received_at")
        .values_list("id", flat=True)[:limit]
    )
    applied = 0
    for report_id in pending:
        with transaction.atomic():
            report = NotificationReport.objects.filter(id=report_id, applied=False).first()
            if report is None:
                continue  # another scheduler applied it meanwhile
            notification = (
                Notification.objects.select_for_update()
                .only("id", "kind", "channel", "status", "recipient", "registration_id")
                .get(id=report.notification_id)
            )
            # Guarded: of two sweeps racing, one marks it and applies it.
            if notification.status in WAITING_FOR_SENT or not NotificationReport.objects.filter(
                id=report.id, applied=False
            ).update(applied=True):
                continue
            _apply(notification, report)
            applied += 1
    return {"reports_applied": applied}


@transaction.atomic(savepoint=False)  # one statement: no savepoint's two round trips inside a caller's transaction
def suppression_add(
    *,
    channel: str,
    address: str,
    reason: str,
    notification_id: uuid.UUID | str | None = None,
    source: str = "",
    note: str = "",
    user: User | None = None,
) -> tuple[Suppression, bool]:
    """Suppress an address (e-mail, compared lower-cased) or number on a channel; returns the active
    Suppression and whether this call created it. An address already suppressed keeps its first
    reason and cause: the row says why sending stopped.

    The partial unique constraint (one active row per address) decides a race (`_insert_once`): of
    two reports suppressing one address at once, one row is written; the other waits for its
    COMMIT, finds the conflict and returns that row. Runs in the caller's transaction when there is one.
    """
    key = suppression_address(channel=channel, address=address)
    suppression = Suppression(
        channel=channel,
        address=key,
        reason=reason,
        notification_id=notification_id,
        source=source,
        note=note,
        created_by=user,
        created_by_name=user.get_username() if user else "",
    )
    suppression.id = _insert_once(suppression)
    if suppression.id is None:  # already suppressed (now, or by a transaction that committed first)
        existing = suppression_active(channel=channel, address=key)
        assert existing is not None
        return existing, False
    metrics.SUPPRESSIONS_ADDED.labels(channel=channel, reason=reason).inc()
    log.info(
        "suppression.added",
        channel=channel,
        reason=reason,
        source=source,
        notification_id=str(notification_id or ""),
        suppression_id=suppression.id,
    )
    return suppression, True


@transaction.atomic
def suppression_lift(*, suppression_id: int, user: User, reason: str) -> bool:
    """Lift an active suppression: sends to the address go out again (and a replay of what it
    stopped sends). Audited on the row itself: who (`lifted_by`, and `lifted_by_name`, which outlives
    the user), when (`lifted_at`), why (`lift_reason`). Needs `notifications.lift_suppression`,
    checked here as well as in the admin.

    Guarded (`WHERE lifted_at IS NULL`): of two staff lifting it at once, one does; returns whether
    this call lifted it.
    """
    reason = reason.strip()
    if not reason:
        raise ValueError("lifting a suppression needs a reason (it is kept in the audit)")
    if not user.has_perm("notifications.lift_suppression"):
        raise PermissionDenied("lifting a suppression needs the permission notifications.lift_suppression")
    lifted = bool(
        Suppression.objects.filter(id=suppression_id, lifted_at__isnull=True).update(
            lifted_at=timezone.now(), lifted_by=user, lifted_by_name=user.get_username(), lift_reason=reason
        )
    )
    if lifted:
        log.info("suppression.lifted", suppression_id=suppression_id, user=user.get_username())
    return lifted
