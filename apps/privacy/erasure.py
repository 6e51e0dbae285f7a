"""An erasure request: one person's personal data redacted everywhere it is stored (issue 10 part 6).

Found by e-mail address: the registrations that carry it now or ever carried it (their event log),
and every webhook event whose body or payload mentions it. The phone numbers of those
registrations are erased with it. What is redacted:
- webhook events: raw body emptied, payload cut to its non-personal skeleton (type, timestamp,
  registration id, event) — the one update the immutability trigger allows;
- registration events' data and the registration projection: e-mail, phone and names blanked;
  the registration is cancelled (there is no one left to write to);
- notifications: recipient and context, error messages; those still waiting to be sent (pending,
  retrying, deferred) end `cancelled` with the reason `erased`;
- notification attempts' and failed applies' error messages, delivery reports' diagnostics and
  details (a DSN quotes the address), and the free-text reasons staff gave in replay, re-apply and
  suppression audits (the address, the phones and the person's names replaced);
- suppressions: an ACTIVE one is kept, address included (docs/delivery-status.md, "Erasure"): it
  is what keeps us from writing to an address that bounced, complained or opted out, and erasing
  it would let the next registration with that address be sent to again. Its free text is
  scrubbed of the person's names. A lifted one no longer serves that purpose: its address is
  erased with the rest.
Everything happens in one transaction: a crash leaves nothing half-erased, and running it again
finds nothing more to do.

Sends in flight: the notifications are read `FOR UPDATE` and their status is changed only by a
guarded UPDATE (`WHERE status IN (pending, retrying)`), never written back from the read. A
worker's claim that comes after that read waits for the erasure and then finds the row
`cancelled`: nothing goes to the erased address. A claim that committed before it (`sending`)
has its provider call out already; its status is left alone, so it still ends `sent` (or
`retrying`, and the send-time checks of a cancelled registration stop it), and is never turned
back into `sending`.

The address is taken in its normal form (eventplatform.addresses; the intake stores that form):
`erase_attendee " Ada@Example.ORG"` finds what was submitted as "ada@example.org ".

An ErasureRecord says it was done, without the address (its hash).
A later delivery from the portal brings the person back: ask the portal to erase first.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import structlog
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.notifications.models import (
    CLAIMABLE,
    Notification,
    NotificationAttempt,
    NotificationReplay,
    NotificationReport,
    Suppression,
)
from apps.privacy.models import ErasureRecord
from apps.registrations.models import ApplyReapply, FailedApply, Registration, RegistrationEvent
from apps.webhooks.models import WebhookEvent
from apps.webhooks.redaction import Redaction, redacted_payload, webhook_events_redact
from eventplatform.addresses import email_key, normalise_email, normalise_phone
from eventplatform.logging import mask_email

log = structlog.get_logger(__name__)

ERASED = "[erased]"
PERSONAL_FIELDS = ("email", "phone", "first_name", "last_name")
WAITING = CLAIMABLE
ERASED_REASON = "Not sent: the attendee's data was erased on request (erase_attendee)."
# Names shorter than this are not searched for in free text: "Al" would blank every "Al" in a reason.
MIN_NAME_LENGTH = 2


def email_digest(email: str) -> str:
    return hashlib.sha256(email_key(email).encode()).hexdigest()


@dataclass
class _Needles:
    """The strings that must not survive, matched case-insensitively and as whole addresses or
    numbers: erasing ann@example.org leaves joann@example.org and ann@example.org.uk alone, and
    +4915112345678 leaves +49151123456789 alone."""

    values: list[str] = field(default_factory=list)

    def pattern(self) -> re.Pattern[str]:
        alternatives = "|".join(re.escape(value) for value in self.values)
        return re.compile(rf"(?<![\w.+-])(?:{alternatives})(?![\w-]|\.\w)", re.IGNORECASE)

    def found_in(self, text: str) -> bool:
        return bool(self.values) and self.pattern().search(text) is not None

    def scrub_text(self, text: str) -> str:
        return self.pattern().sub(ERASED, text) if self.values and text else text

    def scrub(self, value: Any) -> Any:
        """A JSON value with personal fields blanked and any mention of a needle replaced."""
        if isinstance(value, dict):
            return {
                key: "" if key in PERSONAL_FIELDS and isinstance(item, str) else self.scrub(item)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.scrub(item) for item in value]
        if isinstance(value, str):
            return self.scrub_text(value)
        return value


def _like(value: str) -> str:
    return "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _events_mentioning(needles: _Needles) -> set[Any]:
    """Webhook events whose payload, errors or raw body mention a needle. SQL finds candidates
    (substrings), the needles' own pattern keeps only whole-address matches."""
    candidates: set[Any] = set()
    with connection.cursor() as cursor:
        for needle in needles.values:
            like = _like(needle)
            variants = {needle.encode(), needle.lower().encode(), needle.upper().encode()}
            if connection.vendor == "postgresql":
                body = " OR ".join(["position(%s::bytea in raw_body) > 0"] * len(variants))
                cursor.execute(
                    f"SELECT id FROM {WebhookEvent._meta.db_table} WHERE payload::text ILIKE %s ESCAPE '\\' "
                    f"OR errors::text ILIKE %s ESCAPE '\\' OR {body}",
                    [like, like, *variants],
                )
            else:
                body = " OR ".join(["instr(raw_body, %s) > 0"] * len(variants))
                cursor.execute(
                    f"SELECT id FROM {WebhookEvent._meta.db_table} WHERE payload LIKE %s ESCAPE '\\' "
                    f"OR errors LIKE %s ESCAPE '\\' OR {body}",
                    [like, like, *variants],
                )
            candidates.update(WebhookEvent._meta.pk.to_python(row[0]) for row in cursor.fetchall())
    found = set()
    for event_id, raw_body, payload, errors in WebhookEvent.objects.filter(id__in=candidates).values_list(
        "id", "raw_body", "payload", "errors"
    ):
        texts = (bytes(raw_body).decode(errors="replace"), json.dumps(payload), json.dumps(errors))
        if any(needles.found_in(text) for text in texts):
            found.add(event_id)
    return found


@transaction.atomic
def attendee_erase(*, email: str, requested_by: str | None = None) -> ErasureRecord:
    """Redact everything stored about the person with this e-mail address; see the module docstring."""
    email = normalise_email(email)
    mentioning = _events_mentioning(_Needles([email]))
    matching = Registration.objects.filter(
        Q(email__iexact=email) | Q(events__data__email__iexact=email) | Q(events__webhook_event_id__in=mentioning)
    )
    # Locked: an apply of the same registration waits for the erasure (and then sees it).
    registrations = list(Registration.objects.select_for_update().filter(pk__in=matching.values("pk")))
    registration_ids = [registration.pk for registration in registrations]
    registration_events = list(RegistrationEvent.objects.filter(registration_id__in=registration_ids))
    phones = {normalise_phone(registration.phone) for registration in registrations if registration.phone}
    phones |= {normalise_phone(event.data.get("phone")) for event in registration_events if event.data.get("phone")}
    needles = _Needles([email, *sorted(phones)])
    names = {registration.first_name for registration in registrations} | {
        registration.last_name for registration in registrations
    }
    names |= {event.data.get(key) for event in registration_events for key in ("first_name", "last_name")}
    names = {name.strip() for name in names if isinstance(name, str) and len(name.strip()) >= MIN_NAME_LENGTH}
    in_free_text = _Needles([*needles.values, *sorted(names)])

    # Webhook events: those the registrations were built from, and any other mentioning the person.
    event_ids = {event.webhook_event_id for event in registration_events} | mentioning
    if phones:
        event_ids |= _events_mentioning(_Needles(sorted(phones)))
    redactions = []
    for event_id, payload, errors in WebhookEvent.objects.filter(id__in=event_ids).values_list(
        "id", "payload", "errors"
    ):
        redactions.append(
            Redaction(
                event_id=event_id,
                payload=redacted_payload(payload, reason="erasure", drop=tuple(needles.values)),
                errors={"redacted": "erasure"} if errors is not None and needles.found_in(str(errors)) else None,
            )
        )
    counts = {"webhook_events": webhook_events_redact(redactions=redactions)}

    for event in registration_events:
        event.data = needles.scrub(event.data)
    counts["registration_events"] = RegistrationEvent.objects.bulk_update(registration_events, ["data"])
    counts["registrations"] = Registration.objects.filter(pk__in=registration_ids).update(
        email="", phone="", first_name="", last_name="", status=Registration.Status.CANCELLED, updated_at=timezone.now()
    )

    notifications = _notifications_erase(registration_ids=registration_ids, email=email, phones=phones, needles=needles)
    counts["notifications"] = len(notifications)
    counts["notifications_cancelled"] = sum(1 for n in notifications if n.status == Notification.Status.CANCELLED)

    counts["notification_attempts"] = _scrub(
        NotificationAttempt.objects.filter(Q(notification__in=notifications) | Q(error_message__icontains=email)),
        "error_message",
        needles,
    )
    counts["failed_applies"] = _scrub(
        FailedApply.objects.filter(Q(webhook_event_id__in=event_ids) | Q(error_message__icontains=email)),
        "error_message",
        needles,
    )
    counts["notification_reports"] = _reports_scrub(notifications=notifications, email=email, needles=needles)
    counts.update(_suppressions_erase(email=email, phones=phones, needles=in_free_text))
    # Audits: what staff wrote when replaying or re-applying may name the person in any way.
    counts["replay_audits"] = _scrub(
        NotificationReplay.objects.filter(Q(notification__in=notifications) | Q(reason__icontains=email)),
        "reason",
        in_free_text,
    )
    counts["reapply_audits"] = _scrub(
        ApplyReapply.objects.filter(Q(event_id__in=event_ids) | Q(reason__icontains=email)), "reason", in_free_text
    )

    record = ErasureRecord.objects.create(
        email_sha256=email_digest(email),
        erased_at=timezone.now(),
        requested_by=requested_by or getpass.getuser(),
        counts=counts,
    )
    log.info("privacy.erased", email=mask_email(email), erasure_id=record.pk, **counts)
    return record


def _reports_scrub(*, notifications: list[Notification], email: str, needles: _Needles) -> int:
    """Delivery reports (the history after `sent`): the diagnostic and the report's fields quote
    the address ("550 5.1.1 <ada@example.org>: user unknown", a DSN's Final-Recipient)."""
    reports = list(
        NotificationReport.objects.filter(Q(notification__in=notifications) | Q(diagnostic__icontains=email))
    )
    for report in reports:
        report.diagnostic = needles.scrub_text(report.diagnostic)
        report.details = needles.scrub(report.details)
    return NotificationReport.objects.bulk_update(reports, ["diagnostic", "details"])


def _suppressions_erase(*, email: str, phones: set[str], needles: _Needles) -> dict[str, int]:
    """Active suppressions of the address and numbers are kept (see the module docstring), their
    free text scrubbed; lifted ones lose the address too."""
    rows = list(
        Suppression.objects.filter(
            Q(channel=Notification.Channel.EMAIL, address=email_key(email))
            | Q(channel=Notification.Channel.SMS, address__in=phones)
        )
    )
    for row in rows:
        row.note = needles.scrub_text(row.note)
        row.lift_reason = needles.scrub_text(row.lift_reason)
        if row.lifted_at is not None:
            row.address = ERASED
    Suppression.objects.bulk_update(rows, ["note", "lift_reason", "address"])
    return {
        "suppressions_kept": sum(1 for row in rows if row.lifted_at is None),
        "suppressions_erased": sum(1 for row in rows if row.lifted_at is not None),
    }


def _scrub(rows: QuerySet[Any], column: str, needles: _Needles) -> int:
    """Scrub one free-text column of these rows of what names the person; returns how many rows."""
    rows_read = list(rows)
    for row in rows_read:
        setattr(row, column, needles.scrub_text(getattr(row, column)))
    return rows.model.objects.bulk_update(rows_read, [column])


def _notifications_erase(
    *, registration_ids: list[int], email: str, phones: set[str], needles: _Needles
) -> list[Notification]:
    """Lock the person's notifications (in id order, so two erasures cannot deadlock), cancel those
    still waiting with a guarded UPDATE, then blank what they carry. Returns them as they now are.

    The status comes from the guarded UPDATE alone, never from what was read: a row a worker
    claimed before the lock stays `sending` (its call is out; it ends `sent`, not written back);
    a claim after the lock waits for COMMIT and then finds the row `cancelled`.
    """
    chosen = Notification.objects.filter(
        Q(registration_id__in=registration_ids) | Q(recipient__iexact=email) | Q(recipient__in=phones)
    )
    ids = list(
        Notification.objects.select_for_update()
        .filter(pk__in=chosen.values("pk"))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    Notification.objects.filter(pk__in=ids, status__in=WAITING).update(
        status=Notification.Status.CANCELLED,
        last_error_code="erased",
        last_error_message=ERASED_REASON,
        next_attempt_at=None,
        deferred_at=None,
        updated_at=timezone.now(),
    )
    notifications = list(Notification.objects.filter(pk__in=ids).order_by("pk"))
    for notification in notifications:
        notification.recipient = ""
        notification.context = needles.scrub(notification.context)
        notification.last_error_message = needles.scrub_text(notification.last_error_message)
    # Not `status`: it is the guarded UPDATE's (and the workers') alone.
    Notification.objects.bulk_update(notifications, ["recipient", "context", "last_error_message"])
    return notifications
