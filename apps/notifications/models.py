from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models


class Notification(models.Model):
    """One message to one recipient on one channel; (registration, kind, channel, dedupe_key) is unique.

    Status moves only through guarded updates in services (pending/retrying -> sending -> sent,
    retrying or dead), so two workers can never both send it.
    """

    class Kind(models.TextChoices):
        CONFIRMATION = "confirmation"
        UPDATE = "update"
        CANCELLATION = "cancellation"
        REMINDER_24H = "reminder_24h"
        REMINDER_1H = "reminder_1h"

    class Channel(models.TextChoices):
        EMAIL = "email"
        SMS = "sms"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        RETRYING = "retrying"
        SENT = "sent"
        # After `sent`: what the mail system or carrier reported later (CONTRACT section 8,
        # delivery.py); `suppressed` is never sent, the address has an active Suppression.
        DELIVERED = "delivered"
        BOUNCED = "bounced"
        COMPLAINED = "complained"
        SUPPRESSED = "suppressed"
        DEAD = "dead"
        CANCELLED = "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by the unique constraint, which leads with it.
    registration = models.ForeignKey(
        "registrations.Registration", on_delete=models.PROTECT, related_name="notifications", db_index=False
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    channel = models.CharField(max_length=8, choices=Channel.choices)
    dedupe_key = models.CharField(
        max_length=64, blank=True, default="", help_text="Tells apart several updates of one registration."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    recipient = models.CharField(max_length=254)
    context = models.JSONField(help_text="The registration as it was when this notification was decided.")
    attempts = models.PositiveIntegerField(default=0)
    last_error_code = models.CharField(max_length=64, blank=True, default="")
    last_error_message = models.TextField(blank=True, default="")
    provider = models.CharField(max_length=64, blank=True, default="")
    provider_message_id = models.CharField(max_length=255, blank=True, default="")
    correlation_id = models.CharField(max_length=64, blank=True, default="")
    source_received_at = models.DateTimeField(
        null=True, blank=True, help_text="When the webhook that caused it arrived."
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set while a later try waits in the outbox (a retry round or a circuit-breaker deferral).",
    )
    deferred_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set while the send waits in PostgreSQL for the channel's circuit breaker (no outbox row); "
        "cleared when the breaker lets sends through and the send is queued again.",
    )
    replayed_at = models.DateTimeField(
        null=True, blank=True, help_text="Last staff replay; the retry horizon counts from here."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # Written with `sent` (the same UPDATE): the wording the attendee got. Null: the shipped files
    # (or not sent yet). PROTECT: a version that explains a sent message is never deleted (versions
    # hold staff wording, no personal data, so erasure has nothing to take from them).
    template_version = models.ForeignKey(
        "notifications.MessageTemplateVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        help_text="The edited wording this message was rendered with; empty: the shipped default.",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["registration", "kind", "channel", "dedupe_key"],
                name="notification_once_per_registration_kind_channel",
            ),
        ]
        indexes = [
            # The wake-up after an outage reads exactly the deferred rows of one channel.
            models.Index(
                fields=["channel", "deferred_at"],
                condition=models.Q(deferred_at__isnull=False),
                name="notification_deferred",
            ),
            # The admin list filtered by status in its default order, and the status page's counts of
            # what reached a status in the last hour/day (docs/performance.md, "Support pages").
            models.Index(fields=["status", "-created_at"], name="notif_status_created_idx"),
            models.Index(fields=["status", "updated_at"], name="notif_status_updated_idx"),
            models.Index(fields=["correlation_id"], name="notif_correlation_idx"),
            # ESP and SMS status callbacks name the message by the id the provider returned at send.
            # Partial: rows not sent yet (empty id) cost nothing at insert.
            models.Index(
                fields=["provider_message_id"],
                condition=~models.Q(provider_message_id=""),
                name="notif_provider_message_idx",
            ),
        ]
        # Every index costs each insert and each status change (a status change is never a HOT
        # update): kind, channel and status alone, the `LIKE` twins Django adds to indexed text
        # columns and updated_at alone were dropped (migration 0007, docs/performance.md).
        ordering = ["-created_at"]
        permissions = [
            # Sending again is a decision with consequences (an attendee gets a second message): view
            # permission alone must not allow it. Checked by the admin action and the replay page.
            ("replay_notification", "Can replay (send again) a notification"),
        ]

    def __str__(self) -> str:
        return f"{self.kind}/{self.channel} {self.id}"


# The statuses a claim may take a notification from (sending._claim), and that a cancellation, a
# replay or a wake-up of deferred sends looks for: not yet being sent, not finished.
CLAIMABLE = (Notification.Status.PENDING, Notification.Status.RETRYING)


def claim_held(notification_id: Any, claim: int) -> models.QuerySet[Notification]:
    """The notification while the claim whose attempt number is `claim` still holds it (`sending`,
    that attempt). Every update a send makes after its claim is fenced by it (sending._claim): a
    worker whose claim was taken over (it outlived NOTIFICATION_CLAIM_TIMEOUT_SECONDS) changes nothing."""
    return Notification.objects.filter(id=notification_id, status=Notification.Status.SENDING, attempts=claim)


class NotificationAttempt(models.Model):
    """One try at the provider, successful or not; the history support staff read."""

    class Outcome(models.TextChoices):
        SENT = "sent"
        TRANSIENT_ERROR = "transient_error"
        PERMANENT_ERROR = "permanent_error"

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    provider = models.CharField(max_length=64, blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    provider_message_id = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["notification_id", "number"]
        # The status page's chart reads the last day of attempts.
        indexes = [
            models.Index(fields=["started_at"], name="attempt_started_idx"),
            models.Index(fields=["outcome"], name="attempt_outcome_idx"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number}: {self.outcome}" + (f" ({self.error_code})" if self.error_code else "")


class CircuitBreaker(models.Model):
    """One provider's circuit breaker, shared by every worker process.

    Kept in PostgreSQL, not in process memory or Redis: all workers must agree on the state, the
    database is already a hard dependency, and the embedded mode has no Redis. Every transition is a
    guarded UPDATE (`... WHERE state = ...`), so of two processes racing, one wins.
    """

    class State(models.TextChoices):
        CLOSED = "closed"
        OPEN = "open"
        HALF_OPEN = "half_open"
        # Opened at once by a provider_misconfigured failure (wrong password, revoked key): no
        # message can pass until an operator fixes it; probed every
        # NOTIFICATION_BREAKER_MISCONFIGURED_PROBE_SECONDS, closed by the first successful probe.
        MISCONFIGURED = "misconfigured"

    provider = models.CharField(max_length=64, unique=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.CLOSED, db_index=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    opened_at = models.DateTimeField(null=True, blank=True)
    probe_claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the one probe allowed in half_open was taken."
    )
    reason = models.TextField(
        blank=True, default="", help_text="Why it is misconfigured: the error code and the provider's reply."
    )
    misconfigured_since = models.DateTimeField(null=True, blank=True)
    probe_scheduled_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the one probe message for the deferred sends of this channel is due (at most one).",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.provider}: {self.state}"


class SchedulerHeartbeat(models.Model):
    """The last run of a periodic job of the scheduler (`send_reminders --every`), one row per job.

    Kept in PostgreSQL so the status page (a web process) can tell staff whether the scheduler
    (another process, maybe another machine) is alive; the metric alone lives in that process.
    """

    name = models.CharField(max_length=64, unique=True)
    last_started_at = models.DateTimeField(null=True, blank=True)
    last_finished_at = models.DateTimeField(null=True, blank=True)
    last_duration_ms = models.PositiveIntegerField(default=0)
    last_result = models.JSONField(default=dict, blank=True, help_text="What the last run did, e.g. counts.")
    last_error = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return f"{self.name} at {self.last_finished_at}"


class NotificationReplay(models.Model):
    """The audit of one staff replay: who (a user, or a command and its OS user), when, why, and what
    the notification was before. Written in the same transaction as the replay, so a replay without
    its audit row (or an audit row for a replay that did not happen) cannot exist.
    """

    class Actor(models.TextChoices):
        USER = "user"
        COMMAND = "command"

    notification = models.ForeignKey(Notification, on_delete=models.PROTECT, related_name="replays")
    replayed_at = models.DateTimeField(db_index=True)
    actor_type = models.CharField(max_length=16, choices=Actor.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The staff user, when replayed from the admin.",
    )
    actor = models.CharField(
        max_length=200,
        help_text="Username, or the command and the OS user that ran it; kept even if the user is deleted later.",
    )
    reason = models.TextField()
    previous_status = models.CharField(max_length=16, choices=Notification.Status.choices)
    previous_error_code = models.CharField(max_length=64, blank=True, default="")
    previous_attempts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-replayed_at"]

    def __str__(self) -> str:
        return f"{self.notification_id} replayed by {self.actor} at {self.replayed_at:%Y-%m-%d %H:%M:%S}"


class NotificationReport(models.Model):
    """One report about a sent message (a DSN, an abuse report, an ESP event, an SMS status
    callback, or a refusal at hand-over): the notification's history after `sent`, shown to staff.

    Kept whether or not it moved the status. `applied` is False while the report waits for our own
    `sent` to be recorded (a callback that outran the send's write); the scheduler applies it then
    (delivery.notification_reports_apply_pending).
    """

    class Outcome(models.TextChoices):
        DELIVERED = "delivered"
        DELAYED = "delayed"
        BOUNCED = "bounced"
        COMPLAINED = "complained"

    # Indexed by report_notification_idx, which leads with it.
    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="reports", db_index=False)
    source = models.CharField(max_length=32, help_text="dsn, arf, bounce_text, smtp, esp:<name>, sms_callback, sms_api")
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    permanent = models.BooleanField(default=False, help_text="A permanent failure: suppresses the address.")
    status_code = models.CharField(max_length=64, blank=True, default="")
    diagnostic = models.TextField(blank=True, default="")
    details = models.JSONField(default=dict, blank=True, help_text="What the report said, field by field.")
    reported_at = models.DateTimeField(null=True, blank=True, help_text="When the reporter says it happened.")
    received_at = models.DateTimeField(help_text="When we received it.")
    applied = models.BooleanField(default=True, help_text="False while it waits for the notification's `sent`.")
    dedupe_key = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["notification_id", "received_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["notification", "dedupe_key"],
                condition=~models.Q(dedupe_key=""),
                name="notification_report_once",
            ),
        ]
        indexes = [
            # A notification's history (the FK index; the unique constraint is partial).
            models.Index(fields=["notification", "received_at"], name="report_notification_idx"),
            # The scheduler's sweep reads only the few reports still waiting.
            models.Index(fields=["received_at"], condition=models.Q(applied=False), name="report_unapplied_idx"),
            # The status page's counts of the last hour and day.
            models.Index(fields=["outcome", "received_at"], name="report_outcome_received_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.source}: {self.outcome}" + (f" ({self.status_code})" if self.status_code else "")


class Suppression(models.Model):
    """An address or number we do not send to (CONTRACT section 6): a permanent bounce, a complaint,
    an opt-out (SMS STOP) or a staff decision. At most one active row (lifted_at null) per
    (channel, address); a lift is audited (who, when, why) and kept, so the history stays readable.

    `address` is the e-mail lower-cased whole (addresses.email_key) or the E.164 number.
    """

    class Reason(models.TextChoices):
        BOUNCED = "bounced"
        COMPLAINED = "complained"
        OPTED_OUT = "opted_out"
        MANUAL = "manual"

    channel = models.CharField(max_length=8, choices=Notification.Channel.choices)
    address = models.CharField(max_length=254)
    reason = models.CharField(max_length=16, choices=Reason.choices)
    created_at = models.DateTimeField(auto_now_add=True)
    lifted_at = models.DateTimeField(null=True, blank=True, help_text="Null while active.")
    notification = models.ForeignKey(
        Notification,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The notification whose report caused it.",
    )
    source = models.CharField(max_length=32, blank=True, default="", help_text="The report's source, or admin.")
    note = models.TextField(blank=True, default="", help_text="What caused it: the remote status and diagnostic.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_name = models.CharField(
        max_length=150, blank=True, default="", help_text="Who added it by hand; kept if the user is deleted later."
    )
    lifted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    lifted_by_name = models.CharField(
        max_length=150, blank=True, default="", help_text="Who lifted it; kept if the user is deleted later."
    )
    lift_reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Also the index of every lookup: suppression_active and the send's claim.
            models.UniqueConstraint(
                fields=["channel", "address"],
                condition=models.Q(lifted_at__isnull=True),
                name="suppression_one_active_per_address",
            ),
        ]
        permissions = [
            # Lifting sends to an address that bounced or complained again: a decision, not a view.
            ("lift_suppression", "Can lift a suppression (send to the address again)"),
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.reason}" + (" (lifted)" if self.lifted_at else "")

    @property
    def active(self) -> bool:
        return self.lifted_at is None


class MessageTemplate(models.Model):
    """The wording of one message (kind x channel x locale x role), for one portal or (portal empty)
    for all; its text lives in append-only versions, the latest being the one sent. Without a
    template, rendering uses the shipped files (apps/notifications/templates/notifications/)."""

    class Role(models.TextChoices):
        ATTENDEE = "attendee"
        SPEAKER = "speaker"

    kind = models.CharField(max_length=32, choices=Notification.Kind.choices)
    channel = models.CharField(max_length=8, choices=Notification.Channel.choices)
    locale = models.CharField(max_length=16, help_text="e.g. en, de, fr-ca (lower case).")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ATTENDEE)
    portal = models.ForeignKey(
        "webhooks.Portal",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty: for every portal without its own wording.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Two partial constraints: NULLs are distinct in a plain unique constraint.
            models.UniqueConstraint(
                fields=["portal", "kind", "channel", "locale", "role"],
                condition=models.Q(portal__isnull=False),
                name="message_template_once_per_portal",
            ),
            models.UniqueConstraint(
                fields=["kind", "channel", "locale", "role"],
                condition=models.Q(portal__isnull=True),
                name="message_template_once_for_all_portals",
            ),
        ]
        ordering = ["kind", "channel", "locale", "role"]

    def __str__(self) -> str:
        where = f"portal {self.portal_id}" if self.portal_id else "all portals"
        return f"{self.kind}/{self.channel} {self.locale} {self.role} ({where})"


class MessageTemplateVersion(models.Model):
    """One saved text of a template; never changed or deleted (a revert saves a copy as a new version)."""

    template = models.ForeignKey(MessageTemplate, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    subject = models.CharField(max_length=500, blank=True, default="")
    text = models.TextField(help_text="Plain-text body (e-mail) or the SMS text.")
    html = models.TextField(blank=True, default="", help_text="HTML body (e-mail); empty: text only.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by_name = models.CharField(max_length=150, help_text="Kept even if the user is deleted later.")
    created_at = models.DateTimeField(auto_now_add=True)
    note = models.CharField(max_length=200, blank=True, default="", help_text='e.g. "revert to version 2".')

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["template", "number"], name="message_template_version_number"),
        ]
        ordering = ["template", "-number"]

    def __str__(self) -> str:
        return f"version {self.number}"
