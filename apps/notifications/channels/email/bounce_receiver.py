"""The bounce receiver (CONTRACT section 8): an SMTP server, aiosmtpd, for the bounce domain.

- RCPT: the bounce address and its `+TOKEN` forms only. Any other address is 550 (it relays
  nothing); a token that does not verify is 550 too (a forged `bounces+<notification id>`), so a
  forger's message is never even read.
- DATA over BOUNCE_MAX_BYTES: 552 (aiosmtpd's data_size_limit).
- DATA: parsed (reports.py) and recorded with `notification_report_record`, every report of the
  message in one transaction; 250 only after its COMMIT. Database down: 451 4.3.0, so the MTA keeps
  the report and retries. What it cannot use (auto-replies, garbage, reports naming nothing of
  ours) is accepted, logged and counted; an error of ours while handling one message is 451 for
  that message, never the server's end.

The parsing and the database work run in a thread pool (Django's ORM is synchronous; each thread
keeps its own connection), so the event loop keeps taking connections meanwhile.

Crash windows: dies before COMMIT → the MTA got no 250 and sends it again; dies after COMMIT but
before the 250 reached the MTA → sent again, and the report's dedupe key (its Message-ID and block)
makes it one history row.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from aiosmtpd.controller import Controller
from django.db import InterfaceError, OperationalError, close_old_connections, connection, transaction

from apps.notifications.channels.email import reports, return_path
from apps.notifications.delivery import ReportResult, notification_report_record
from eventplatform import metrics
from eventplatform.logging import mask_email

log = structlog.get_logger("notifications.bounce_receiver")

REPLY_ACCEPTED = "250 2.0.0 Report recorded"
REPLY_IGNORED = "250 2.0.0 Accepted (nothing to record)"
REPLY_DATABASE_DOWN = "451 4.3.0 Cannot record the report now, please try again later"
REPLY_ERROR = "451 4.3.0 Could not process the report, please try again later"
REPLY_NOT_OURS = "550 5.1.1 This server takes reports for the bounce address only (it relays nothing)"
REPLY_FORGED = "550 5.7.1 Return-path token does not verify"


def _count(outcome: str) -> None:
    metrics.BOUNCE_MESSAGES.labels(outcome=outcome).inc()


def bounce_message_record(*, raw: bytes, recipients: list[str]) -> str:
    """Parse one message received at the bounce address and record what it reports; returns the
    SMTP reply. `recipients`: its envelope recipients, checked at RCPT (ours, tokens verified)."""
    notifications = [found for found in map(return_path.address_notification, recipients) if found]
    parsed = reports.parse(raw, envelope_notifications=notifications)
    if parsed.unusable:
        _count(parsed.unusable)
        log.info(
            "bounce.unusable",
            error_code="bounce_unusable",
            reason=parsed.unusable,
            recipients=[mask_email(address) for address in recipients],
            size=len(raw),
        )
        return REPLY_IGNORED
    close_old_connections()
    try:
        # One transaction for all the reports of the message (one, nearly always: then the
        # service's own transaction is that one, without a savepoint's two round trips).
        with transaction.atomic() if len(parsed.reports) > 1 else contextlib.nullcontext():
            results = [_record(found) for found in parsed.reports]
    except (OperationalError, InterfaceError) as error:
        connection.close()  # the next message connects afresh
        _count("database_unavailable")
        log.warning("bounce.database_unavailable", error_code="database_unavailable", error=type(error).__name__)
        return REPLY_DATABASE_DOWN
    # What each report did is logged by notification_report_record (notification.report_applied,
    # notification.report_unknown): one line per report, not two.
    recorded = any(result.found for result in results)
    _count(parsed.kind if recorded else "unknown_notification")
    return REPLY_ACCEPTED if recorded else REPLY_IGNORED


def _record(found: reports.FoundReport) -> ReportResult:
    if found.notification_id is not None:
        return notification_report_record(report=found.report, notification_id=found.notification_id)
    return notification_report_record(report=found.report, provider_message_id=found.message_id, channel="email")


class BounceHandler:
    """aiosmtpd handler: RCPT checks the address, DATA records in the thread pool."""

    def __init__(self, *, threads: int = 8) -> None:
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bounce")

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        token = return_path.bounce_address_token(address)
        if token is None:
            _count("recipient_refused")
            log.info("bounce.recipient_refused", error_code="bounce_recipient_refused", recipient=mask_email(address))
            return REPLY_NOT_OURS
        if token and return_path.token_verify(token) is None:
            _count("forged_token")
            log.warning("bounce.forged_token", error_code="bounce_forged_token", recipient=mask_email(address))
            return REPLY_FORGED
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        loop = asyncio.get_running_loop()
        raw = envelope.original_content or envelope.content or b""
        try:
            return await loop.run_in_executor(self.executor, self._record, bytes(raw), list(envelope.rcpt_tos))
        except Exception:  # one message's failure must not stop the server
            _count("error")
            log.exception("bounce.error", error_code="bounce_receiver_error")
            return REPLY_ERROR

    def _record(self, raw: bytes, recipients: list[str]) -> str:
        try:
            return bounce_message_record(raw=raw, recipients=recipients)
        except Exception:
            # The transaction rolled back: close the connection, so a broken one is not reused.
            connection.close()
            raise

    def close(self) -> None:
        self.executor.shutdown(wait=True)


def bounce_receiver_controller(*, host: str, port: int, max_bytes: int, threads: int = 8) -> Controller:
    """The aiosmtpd server (not started); it greets as `eventplatform-bounces`, not the machine name."""
    handler = BounceHandler(threads=threads)
    return Controller(
        handler,
        hostname=host,
        port=port,
        data_size_limit=max_bytes,
        server_hostname="eventplatform-bounces",
        ident="eventplatform bounce receiver",
    )
