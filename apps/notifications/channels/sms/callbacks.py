"""SMS status callbacks (CONTRACT section 8): what the carrier says after Twilio's API accepted a message.

With PUBLIC_BASE_URL set, every send asks for callbacks at `<PUBLIC_BASE_URL>/sms/status/<notification
id>/` (`status_callback_url`). The notification id in the URL is what matches a callback to its
notification: a callback can arrive before our own `sent` write (and its MessageSid) is committed, and
the delivery service keeps such a report until the notification is sent. The signature covers the URL,
so the id in it is as authentic as the form.

A callback counts only with a valid `X-Twilio-Signature`: base64 of HMAC-SHA1, keyed with
SMS_AUTH_TOKEN, of the URL Twilio called followed by every form field's name and value sorted by name.
That URL is rebuilt from PUBLIC_BASE_URL and the request's path and query, never from the Host header
or the scheme the request came with: behind a proxy those are the proxy's, and a Host an attacker
chose must not decide what is signed. Anything else is 403 `invalid_provider_signature`.

What the callback says (`MessageStatus`, `ErrorCode`) becomes a DeliveryReport by the table
`report_for`; the delivery service records it (history row, forward-only status, suppression) in one
transaction before we answer 2xx. The database down is a 503 (Twilio logs it; the report is lost only
if it never calls again, and a later `delivered`/`undelivered` still lands). A callback for a
notification we do not have is answered 204 and counted: it is nobody's error to retry. If the
process dies after the COMMIT and before the answer, a callback Twilio makes again is the same
MessageSid and MessageStatus, so the same history row (the report's dedupe key).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import uuid
from dataclasses import dataclass

import structlog
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from apps.notifications.delivery import (
    WAITING_FOR_SENT,
    DeliveryReport,
    ReportOutcome,
    notification_report_record,
)
from apps.notifications.models import Notification
from eventplatform import metrics
from eventplatform.database import storage_unavailable
from eventplatform.errors import describe

log = structlog.get_logger("notifications.sms.callbacks")

SOURCE = "sms_callback"
SIGNATURE_HEADER = "X-Twilio-Signature"

# Twilio's ErrorCodes for a number that cannot receive messages at all (30005: unknown or inactive
# number; 30006: a landline or unreachable carrier): permanent, the number is suppressed. Any other
# code (30003 unreachable handset, 30007 carrier filtering, 30008 unknown error, ...) may pass later.
PERMANENT_ERROR_CODES = frozenset({"30005", "30006"})


@dataclass(frozen=True)
class StatusRule:
    """One row of the table: what a MessageStatus means for the notification (None: history only)."""

    outcome: ReportOutcome | None
    meaning: str


# MessageStatus -> what it means. Statuses before the carrier's answer (queued, sending, sent,
# accepted, scheduled) change no status: `sent` is ours already, and a late one after `delivered`
# must change nothing. Statuses Twilio adds later are ignored the same way (counted as "ignored").
STATUS_TABLE: dict[str, StatusRule] = {
    "delivered": StatusRule(ReportOutcome.DELIVERED, "the carrier confirmed delivery to the handset"),
    "undelivered": StatusRule(ReportOutcome.BOUNCED, "the carrier could not deliver it (ErrorCode says why)"),
    "failed": StatusRule(ReportOutcome.BOUNCED, "Twilio could not send it to the carrier (ErrorCode says why)"),
    "queued": StatusRule(None, "waiting at Twilio"),
    "accepted": StatusRule(None, "accepted by a messaging service"),
    "scheduled": StatusRule(None, "scheduled by a messaging service"),
    "sending": StatusRule(None, "being handed to the carrier"),
    "sent": StatusRule(None, "handed to the carrier; no answer from it yet"),
}


def status_callback_url(notification_id: str) -> str | None:
    """The StatusCallback a send asks for, or None without PUBLIC_BASE_URL (no callbacks then)."""
    if not settings.PUBLIC_BASE_URL:
        return None
    return settings.PUBLIC_BASE_URL + reverse("sms-status-callback", kwargs={"notification_id": notification_id})


def twilio_signature(*, auth_token: str, url: str, form: QueryDict) -> str:
    """base64(HMAC-SHA1(auth_token, url + name1 + value1 + name2 + value2 ...)), names sorted (a name
    given twice contributes each value, sorted, as Twilio's own validators do)."""
    data = url + "".join(name + value for name in sorted(form) for value in sorted(form.getlist(name)))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def _signed_url(request: HttpRequest) -> str:
    """The URL Twilio called, as we published it: PUBLIC_BASE_URL + path (+ query)."""
    query = request.META.get("QUERY_STRING", "")
    return settings.PUBLIC_BASE_URL + request.path_info + (f"?{query}" if query else "")


def _signature_valid(request: HttpRequest) -> bool:
    given = request.headers.get(SIGNATURE_HEADER, "")
    if not given or not settings.SMS_AUTH_TOKEN or not settings.PUBLIC_BASE_URL:
        return False
    expected = twilio_signature(auth_token=settings.SMS_AUTH_TOKEN, url=_signed_url(request), form=request.POST)
    return hmac.compare_digest(given.encode(), expected.encode())


def report_for(*, message_status: str, error_code: str, message_sid: str) -> DeliveryReport | None:
    """The DeliveryReport a callback makes, or None for a status that changes nothing (see the table).

    `dedupe_key` is MessageSid + MessageStatus: Twilio calls once per status change, so the same pair
    again is a replay and makes no second history row.
    """
    rule = STATUS_TABLE.get(message_status)
    if rule is None or rule.outcome is None:
        return None
    permanent = rule.outcome is ReportOutcome.BOUNCED and error_code in PERMANENT_ERROR_CODES
    return DeliveryReport(
        source=SOURCE,
        outcome=rule.outcome,
        permanent=permanent,
        status_code=error_code,
        diagnostic=f"SMS {message_status}" + (f", ErrorCode {error_code}" if error_code else "") + f": {rule.meaning}",
        reported_at=dt.datetime.now(dt.UTC),
        details={"MessageStatus": message_status, "ErrorCode": error_code, "MessageSid": message_sid},
        dedupe_key=f"{message_sid}:{message_status}"[:64],
    )


def _about_an_earlier_message(notification_id: uuid.UUID, message_sid: str) -> bool:
    """Whether the notification was sent again since (a staff replay recorded a new MessageSid), so
    that this callback is about a message that is no longer its latest. While a send is under way
    (pending, sending, retrying) the callback may be that send's, outrunning our `sent` write: it is
    matched by the URL's id alone and kept until the send is recorded (the price: an earlier
    message's callback arriving in that window is taken for the new one's)."""
    current = (
        Notification.objects.filter(id=notification_id, channel=Notification.Channel.SMS)
        .values_list("status", "provider_message_id")
        .first()
    )
    if current is None:
        return False
    status, recorded = current
    return status not in WAITING_FOR_SENT and bool(recorded and message_sid) and recorded != message_sid


def _error(code: str, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message}}, status=describe(code).http_status)
    for name, value in headers.items():
        response[name] = value
    return response


@csrf_exempt
def sms_status_callback(request: HttpRequest, notification_id: uuid.UUID) -> HttpResponse:
    if request.method != "POST":
        return _error("method_not_allowed", "Use POST.", Allow="POST")
    if not _signature_valid(request):
        metrics.PROVIDER_REPORTS.labels(source=SOURCE, event="", result="invalid_signature").inc()
        log.warning(
            "sms.status_callback_refused",
            error_code="invalid_provider_signature",
            notification_id=str(notification_id),
            signed=bool(request.headers.get(SIGNATURE_HEADER)),
        )
        response = _error("invalid_provider_signature", "Missing or invalid X-Twilio-Signature.")
        response._has_been_logged = True  # type: ignore[attr-defined]  # logged above, not again by django.request
        return response
    # Bounded: they come from the signed form, but a log line and a metric label stay small.
    message_status = request.POST.get("MessageStatus", "")[:32]
    message_sid = request.POST.get("MessageSid", "")[:64]
    error_code = request.POST.get("ErrorCode", "")[:16]
    event = message_status if message_status in STATUS_TABLE else "other"
    report = report_for(message_status=message_status, error_code=error_code, message_sid=message_sid)
    if report is None:
        metrics.PROVIDER_REPORTS.labels(source=SOURCE, event=event, result="ignored").inc()
        return HttpResponse(status=204)
    try:
        if _about_an_earlier_message(notification_id, message_sid):
            metrics.PROVIDER_REPORTS.labels(source=SOURCE, event=event, result="stale").inc()
            log.info(
                "sms.status_callback_stale",
                notification_id=str(notification_id),
                message_sid=message_sid,
                message_status=message_status,
            )
            return HttpResponse(status=204)
        result = notification_report_record(
            report=report,
            notification_id=str(notification_id),
            provider_message_id=message_sid,
            channel=Notification.Channel.SMS,
        )
    except DatabaseError as error:
        # Nothing committed; a 5xx so that the provider may call again (never for input of its own).
        if not storage_unavailable(error):
            raise
        connection.close()
        return _error("database_unavailable", "Storage is unavailable; please retry.", **{"Retry-After": "5"})
    if not result.found:
        metrics.PROVIDER_REPORTS.labels(source=SOURCE, event=event, result="unmatched").inc()
        log.warning(
            "sms.status_callback_unmatched",
            error_code="provider_report_unmatched",
            notification_id=str(notification_id),
            message_sid=message_sid,
            message_status=message_status,
        )
        return HttpResponse(status=204)
    metrics.PROVIDER_REPORTS.labels(
        source=SOURCE, event=event, result="changed" if result.changed else "recorded"
    ).inc()
    log.info(
        "sms.status_callback",
        notification_id=str(notification_id),
        message_sid=message_sid,
        message_status=message_status,
        sms_error_code=error_code,
        status=result.status,
        changed=result.changed,
        suppressed=result.suppressed,
    )
    return HttpResponse(status=204)
