"""What a mail sent to the bounce address says, read with the standard library's `email` package.

- RFC 3464 delivery status notifications (multipart/report; report-type=delivery-status): one
  DeliveryReport per recipient block of the message/delivery-status part. Action delivered,
  relayed or expanded → delivered; delayed → delayed (history only); failed → bounced, permanent
  when Status is 5.x.x. They count only for a notification named by a token that verifies: the
  envelope recipient (our VERP address) or the DSN's Original-Envelope-Id (the ENVID we sent).
- RFC 5965 abuse reports (report-type=feedback-report, Feedback-Type abuse) → complained (the
  other types, fraud, virus, auth-failure, not-spam, other, do not say the recipient complained).
  The message is named by a verified token (envelope recipient, the report's Original-Mail-From,
  or the returned message's Return-Path), else by the returned message's Message-ID, which is the
  `provider_message_id` the SMTP provider stored at send (make_msgid, random: only the recipient
  has seen it).
- Anything else at a verified token: flufl.bounce (Mailman's detectors for the plain-text formats
  of older MTAs) finds the failed addresses; permanent ones → bounced (permanent), temporary ones →
  delayed.
- Never by `X-Eventplatform-Notification-Id`: anyone who received one of our e-mails knows it.

Parsed with `email.policy.compat32`, on purpose: the fields read here (DSN and ARF fields, a few
headers) are wanted as the MTA wrote them, and policy.default runs its structured header parser on
every field access (the feedparser alone asks for each part's Content-Type dozens of times). On a
Postfix DSN that was 6.8 ms of CPU per recorded report against 3.0 ms with compat32
(bench/bounce_receiver.py; docs/performance.md), the difference between missing and meeting 200
reports/s on two cores. Non-ASCII header bytes come back as text with replacement characters.

Pure parsing, no database: bounce_receiver.py records what this returns. Auto-replies, garbage and
reports that name nothing of ours come back as `Parsed.unusable` with a reason (counted, logged).
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import Message
from email.utils import parsedate_to_datetime
from typing import Any

from flufl.bounce import all_failures

from apps.notifications.channels.email import return_path
from apps.notifications.delivery import DeliveryReport, ReportOutcome

POLICY = email.policy.compat32
# flufl.bounce logs every detector it runs at INFO: one line per detector per message.
logging.getLogger("flufl.bounce").setLevel(logging.WARNING)

_ACTIONS = {
    "delivered": ReportOutcome.DELIVERED,
    "relayed": ReportOutcome.DELIVERED,
    "expanded": ReportOutcome.DELIVERED,
    "delayed": ReportOutcome.DELAYED,
    "failed": ReportOutcome.BOUNCED,
}
_STATUS = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# The DSN fields kept in the report's history row, as the MTA gave them.
_DSN_FIELDS = (
    "Action",
    "Status",
    "Diagnostic-Code",
    "Final-Recipient",
    "Original-Recipient",
    "Remote-MTA",
    "Last-Attempt-Date",
    "Will-Retry-Until",
)
_DSN_MESSAGE_FIELDS = ("Reporting-MTA", "Arrival-Date", "Original-Envelope-Id")
_ARF_FIELDS = ("Feedback-Type", "User-Agent", "Version", "Arrival-Date", "Reported-Domain", "Source-IP")
_FIELD_MAX = 1000


@dataclass(frozen=True)
class FoundReport:
    """A report and how it names its notification: by id (a verified token) or by the Message-ID
    we sent (an abuse report without a token)."""

    report: DeliveryReport
    notification_id: uuid.UUID | None = None
    message_id: str = ""


@dataclass(frozen=True)
class Parsed:
    """`kind`: dsn, arf, bounce_text, or "" when unusable; `unusable`: why (auto_reply, no_token,
    no_report, unparseable, not_a_report, not_a_complaint)."""

    kind: str
    reports: list[FoundReport] = field(default_factory=list)
    unusable: str = ""


def _text(value: Any) -> str:
    """A field as text PostgreSQL stores: whitespace folded, 8-bit bytes the MTA sent undeclared
    (surrogates here) and NULs replaced."""
    text = str(value or "").encode("utf-8", "replace").decode("utf-8").replace("\x00", "?")
    return " ".join(text.split())[:_FIELD_MAX]


def _date(value: str) -> dt.datetime | None:
    """A report's date; "-0000" (zone unknown, RFC 5322) is read as UTC."""
    try:
        when = parsedate_to_datetime(value) if value else None
    except (TypeError, ValueError, IndexError):
        return None
    return when.replace(tzinfo=dt.UTC) if when is not None and when.tzinfo is None else when


def _fields(block: Message) -> dict[str, str]:
    """A block's fields by lower-cased name, whitespace folded, read once."""
    return {name.lower(): _text(value) for name, value in block.items()}


def _verified(addresses: Iterable[str]) -> uuid.UUID | None:
    """The first notification named by a return-path address whose token verifies."""
    for address in addresses:
        # Fields like Original-Mail-From or Final-Recipient may carry "rfc822;" and angle brackets.
        address = address.rpartition(";")[2].strip().strip("<>").strip()
        if address:
            notification_id = return_path.address_notification(address)
            if notification_id is not None:
                return notification_id
    return None


def _envid(value: str) -> uuid.UUID | None:
    """ENVID is xtext (RFC 3461); our tokens need no escaping, so an escaped one is not ours."""
    return return_path.token_verify(value.strip()) if value and "+" not in value else None


def _dedupe_key(kind: str, message: Message, raw: bytes, index: int) -> str:
    """The same report delivered again (the MTA retrying after our 250 was lost) is one row: the
    report's own Message-ID, else a digest of its bytes, and the block's position in it."""
    message_id = _text(message.get("Message-ID", ""))
    identity = message_id or hashlib.sha256(raw).hexdigest()
    return f"{kind}:{identity}:{index}"[:255]


def _is_auto_reply(message: Message) -> bool:
    """RFC 3834's Auto-Submitted, and the headers older responders set (vacation replies)."""
    auto_submitted = str(message.get("Auto-Submitted", "no")).strip().lower()
    precedence = str(message.get("Precedence", "")).strip().lower()
    return (
        auto_submitted not in ("", "no")
        or precedence in ("auto_reply", "bulk", "junk", "list")
        or any(name in message for name in ("X-Autoreply", "X-Autorespond", "X-Auto-Response-Suppress"))
    )


def parse(raw: bytes, *, envelope_notifications: list[uuid.UUID]) -> Parsed:
    """Read one message sent to the bounce address. `envelope_notifications`: the notifications
    named by the verified tokens of its envelope recipients (usually one, or none for the plain
    address). Raises nothing for bad input: a message the parser cannot read is `unparseable`."""
    try:
        message = email.message_from_bytes(raw, policy=POLICY)
        content_type = message.get_content_type()
        report_type = str(message.get_param("report-type", "") or "").lower()
    except Exception:  # noqa: BLE001 - the email package raises many kinds on garbage; all mean one thing here
        return Parsed("", unusable="unparseable")
    if content_type == "multipart/report" and report_type == "delivery-status":
        return _delivery_status(message, raw, envelope_notifications)
    if content_type == "multipart/report" and report_type == "feedback-report":
        return _feedback_report(message, raw, envelope_notifications)
    if _is_auto_reply(message):
        return Parsed("", unusable="auto_reply")
    if not envelope_notifications:
        return Parsed("", unusable="no_token")
    return _plain_bounce(message, raw, envelope_notifications)


def _sub_messages(part: Message) -> list[Message]:
    """The messages a message/* part holds (delivery-status blocks, the returned message)."""
    payload = part.get_payload()
    return [item for item in payload if isinstance(item, Message)] if isinstance(payload, list) else []


def _parts(message: Message) -> dict[str, Message]:
    """The first part of each content type, the message walked once."""
    parts: dict[str, Message] = {}
    for part in message.walk():
        parts.setdefault(part.get_content_type(), part)
    return parts


def _delivery_status(message: Message, raw: bytes, envelope_notifications: list[uuid.UUID]) -> Parsed:
    status_part = _parts(message).get("message/delivery-status")
    blocks = [_fields(block) for block in _sub_messages(status_part)] if status_part is not None else []
    if len(blocks) < 2:
        return Parsed("", unusable="no_report")
    per_message, recipients = blocks[0], blocks[1:]
    notifications = envelope_notifications or [
        found for found in [_envid(per_message.get("original-envelope-id", ""))] if found
    ]
    if not notifications:
        return Parsed("", unusable="no_token")
    message_fields = {name: per_message[name.lower()] for name in _DSN_MESSAGE_FIELDS if per_message.get(name.lower())}
    reports = []
    for index, block in enumerate(recipients):
        outcome = _ACTIONS.get(block.get("action", "").lower())
        if outcome is None:
            continue
        status = _STATUS.search(block.get("status", ""))
        status_code = ".".join(status.groups()) if status else ""
        report = DeliveryReport(
            source="dsn",
            outcome=outcome,
            permanent=outcome == ReportOutcome.BOUNCED and status_code.startswith("5."),
            status_code=status_code,
            diagnostic=block.get("diagnostic-code", ""),
            reported_at=_date(block.get("last-attempt-date") or per_message.get("arrival-date") or ""),
            details={name: block[name.lower()] for name in _DSN_FIELDS if block.get(name.lower())} | message_fields,
            dedupe_key=_dedupe_key("dsn", message, raw, index),
        )
        reports += [FoundReport(report, notification_id=notification) for notification in notifications]
    return Parsed("dsn", reports) if reports else Parsed("", unusable="no_report")


def _returned_headers(parts: dict[str, Message]) -> dict[str, str]:
    """The returned message's headers (message/rfc822, or text/rfc822-headers), by lower-cased name."""
    if "message/rfc822" in parts:
        returned = _sub_messages(parts["message/rfc822"])
        return _fields(returned[0]) if returned else {}
    if "text/rfc822-headers" in parts:
        text = parts["text/rfc822-headers"].get_payload(decode=True) or b""
        return _fields(email.message_from_bytes(bytes(text), policy=POLICY))
    return {}


def _feedback_report(message: Message, raw: bytes, envelope_notifications: list[uuid.UUID]) -> Parsed:
    parts = _parts(message)
    feedback = _sub_messages(parts["message/feedback-report"]) if "message/feedback-report" in parts else []
    if not feedback:
        return Parsed("", unusable="no_report")
    fields = _fields(feedback[0])
    feedback_type = fields.get("feedback-type", "abuse").lower()
    if feedback_type != "abuse":
        # fraud, virus, auth-failure (DMARC failure reports), not-spam, other: the recipient did not
        # report our message as spam, so nothing to suppress.
        return Parsed("", unusable="not_a_complaint")
    returned = _returned_headers(parts)
    notification = next(iter(envelope_notifications), None) or _verified(
        [fields.get("original-mail-from", ""), returned.get("return-path", "")]
    )
    message_id = "" if notification else returned.get("message-id", "").strip("<>")
    if notification is None and not message_id:
        return Parsed("", unusable="no_token")
    report = DeliveryReport(
        source="arf",
        outcome=ReportOutcome.COMPLAINED,
        permanent=True,
        status_code=feedback_type,
        diagnostic=fields.get("user-agent", ""),
        reported_at=_date(fields.get("arrival-date") or str(message.get("Date") or "")),
        details={name: fields[name.lower()] for name in _ARF_FIELDS if fields.get(name.lower())},
        dedupe_key=_dedupe_key("arf", message, raw, 0),
    )
    return Parsed("arf", [FoundReport(report, notification_id=notification, message_id=message_id)])


def _plain_bounce(message: Message, raw: bytes, envelope_notifications: list[uuid.UUID]) -> Parsed:
    """A bounce in an older MTA's own format, read by flufl.bounce's detectors."""
    try:
        temporary, permanent = all_failures(message)
    except Exception:  # noqa: BLE001 - a detector choking on odd input: nothing detected
        return Parsed("", unusable="unparseable")
    if not temporary and not permanent:
        return Parsed("", unusable="not_a_report")
    failed = sorted(address.decode(errors="replace") for address in permanent)
    delayed = sorted(address.decode(errors="replace") for address in temporary)
    outcome = ReportOutcome.BOUNCED if permanent else ReportOutcome.DELAYED
    report = DeliveryReport(
        source="bounce_text",
        outcome=outcome,
        permanent=bool(permanent),
        status_code="5.0.0" if permanent else "4.0.0",
        diagnostic=_text(message.get("Subject")),
        reported_at=_date(str(message.get("Date") or "")),
        details={"failed": ", ".join(failed)[:_FIELD_MAX], "delayed": ", ".join(delayed)[:_FIELD_MAX]},
        dedupe_key=_dedupe_key("bounce_text", message, raw, 0),
    )
    return Parsed("bounce_text", [FoundReport(report, notification_id=n) for n in envelope_notifications])
