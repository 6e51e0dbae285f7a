"""ESP tracking webhooks (CONTRACT section 8): django-anymail's normalized events onto our statuses.

Anymail serves `/anymail/<esp>/tracking/` (apps/support/urls.py includes anymail.urls), checks each
request as the ESP signs or authenticates it (basic auth with ANYMAIL WEBHOOK_SECRET; Mailgun's HMAC
with MAILGUN_WEBHOOK_SIGNING_KEY as well; a failed check is a 400 and reaches no code of ours), parses
the ESP's payload and sends the `tracking` signal once per event. `esp_tracking_received` (connected in
NotificationsConfig.ready) turns an event into a DeliveryReport by the table `report_for` and records
it against the notification whose `provider_message_id` is the id anymail returned at send.

Answers: anymail answers 200 once every event of the request was handled. An event for a message we
do not know (another system on the same ESP account, an erased notification) is counted and logged,
never an error: the ESP would retry it for hours. The database down raises out of the receiver, so
anymail's view answers 500 and the ESP retries later (Mailgun, Postmark and SendGrid do), which is
what we want: nothing was committed. The process dying mid-request is the same: no 2xx, a retry, and
the retried event is one history row (its dedupe_key). An ESP that posts several events in one
request (SendGrid) retries them all: each is its own transaction, and those already committed are
found by their dedupe_key and kept once.
"""

from __future__ import annotations

import hashlib
from typing import Any

import structlog
from anymail.signals import AnymailTrackingEvent, EventType, RejectReason
from anymail.utils import get_anymail_setting

from apps.notifications.delivery import DeliveryReport, ReportOutcome, notification_report_record
from apps.notifications.models import Notification
from eventplatform import metrics

log = structlog.get_logger("notifications.email.tracking")


# Whether a failure is the address's fault, so that it is suppressed, by anymail's reject_reason:
# - a bounce (the receiving side refused it) is, unless the reason says the message failed rather
#   than the address: repeated temporary failures until the ESP gave up (timed_out), a policy block
#   (blocked), content taken for spam (spam). Any other reason (bounced, invalid, other, none) is.
# - a rejection (the ESP refused to send) is only for the reasons that name the address: an invalid
#   one, or one on the ESP's own bounce or unsubscribe list. Otherwise it is the account's or the
#   message's problem (sending limits, an unverified domain, policy) and the address may be fine.
# A complaint always suppresses.
MESSAGE_NOT_ADDRESS = frozenset({RejectReason.TIMED_OUT, RejectReason.BLOCKED, RejectReason.SPAM})
ADDRESS_REJECTED = frozenset({RejectReason.INVALID, RejectReason.BOUNCED, RejectReason.UNSUBSCRIBED})


def _permanent(event_type: str, reason: str) -> bool:
    if event_type == EventType.COMPLAINED:
        return True
    if event_type == EventType.BOUNCED:
        return reason not in MESSAGE_NOT_ADDRESS
    if event_type == EventType.REJECTED:
        return reason in ADDRESS_REJECTED
    return False


# Anymail's normalized event types that tell what became of a message; every other type (queued,
# sent, opened, clicked, unsubscribed, subscribed, autoresponded, failed before sending, unknown) is
# ignored and counted.
EVENT_TABLE: dict[str, ReportOutcome] = {
    EventType.DELIVERED: ReportOutcome.DELIVERED,
    EventType.BOUNCED: ReportOutcome.BOUNCED,
    EventType.REJECTED: ReportOutcome.BOUNCED,
    EventType.COMPLAINED: ReportOutcome.COMPLAINED,
    EventType.DEFERRED: ReportOutcome.DELAYED,
}


def _dedupe_key(event: AnymailTrackingEvent, esp_name: str) -> str:
    """The ESP's event id when anymail gives one (Mailgun: the signature's single-use token), else
    what the event said and when: the same event delivered twice is one history row."""
    identity = event.event_id or f"{event.event_type}|{event.message_id}|{event.timestamp}"
    return f"esp:{hashlib.sha256(f'{esp_name}|{identity}'.encode()).hexdigest()[:40]}"


def report_for(event: AnymailTrackingEvent, esp_name: str) -> DeliveryReport | None:
    """The DeliveryReport an anymail tracking event makes, or None for an event that changes nothing."""
    outcome = EVENT_TABLE.get(event.event_type)
    if outcome is None:
        return None
    reason = event.reject_reason or ""
    return DeliveryReport(
        source=f"esp:{esp_name.lower()}",
        outcome=outcome,
        permanent=_permanent(event.event_type, reason),
        status_code=reason,
        # The ESP's words; they may quote the address, so they go where erasure scrubs them.
        diagnostic=str(event.mta_response or event.description or "")[:2000],
        reported_at=event.timestamp,
        details={"esp": esp_name, "event": event.event_type, "reject_reason": reason, "event_id": event.event_id},
        dedupe_key=_dedupe_key(event, esp_name),
    )


def _authenticated(view: Any) -> bool:
    """Whether anymail's view checked who sent the event. For most ESPs basic auth (WEBHOOK_SECRET)
    is the only check, and without it anymail merely warns and accepts anyone's events: those are
    not believed (a forged bounce would suppress an attendee's address). ESPs that sign their events
    (Mailgun: `warn_if_no_basic_auth = False`) were checked by their signing key in any case."""
    if not getattr(view, "warn_if_no_basic_auth", True):
        return True
    return bool(get_anymail_setting("webhook_secret", default=None))


def esp_tracking_received(sender: Any, event: AnymailTrackingEvent, esp_name: str, **kwargs: Any) -> None:
    """Receiver of anymail's `tracking` signal; runs inside anymail's webhook view (`sender`)."""
    source = f"esp:{esp_name.lower()}"
    event_label = event.event_type if event.event_type in EVENT_TABLE else "other"
    if not _authenticated(sender):
        metrics.PROVIDER_REPORTS.labels(source=source, event=event_label, result="unauthenticated").inc()
        log.warning("esp.tracking_unauthenticated", error_code="esp_webhook_unauthenticated", esp=esp_name)
        return
    report = report_for(event, esp_name)
    if report is None:
        metrics.PROVIDER_REPORTS.labels(source=source, event=event_label, result="ignored").inc()
        return
    message_id = str(event.message_id or "")
    # No id, nothing to match (an empty id must not match the notifications that have none).
    result = (
        notification_report_record(report=report, provider_message_id=message_id, channel=Notification.Channel.EMAIL)
        if message_id
        else None
    )
    if result is None or not result.found:
        metrics.PROVIDER_REPORTS.labels(source=source, event=event_label, result="unmatched").inc()
        log.warning(
            "esp.tracking_unmatched",
            error_code="provider_report_unmatched",
            esp=esp_name,
            esp_event=event.event_type,
            message_id=message_id[:255],
        )
        return
    metrics.PROVIDER_REPORTS.labels(
        source=source, event=event_label, result="changed" if result.changed else "recorded"
    ).inc()
    log.info(
        "esp.tracking",
        esp=esp_name,
        esp_event=event.event_type,
        message_id=message_id[:255],
        status=result.status,
        changed=result.changed,
        suppressed=result.suppressed,
    )
