from __future__ import annotations

from django.conf import settings
from django.db import models


class Registration(models.Model):
    """The current state of one registration: a projection, always derivable from its events.

    `rebuild_registrations` recomputes it from RegistrationEvent rows; nothing else is the truth.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        CANCELLED = "cancelled"

    # Indexed by the unique constraint, which leads with it.
    portal = models.ForeignKey(
        "webhooks.Portal", on_delete=models.PROTECT, related_name="registrations", db_index=False
    )
    external_id = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    version = models.PositiveIntegerField(default=0, help_text="Number of domain events applied.")
    email = models.EmailField(max_length=254, blank=True)
    phone = models.CharField(max_length=20, blank=True)
    first_name = models.CharField(max_length=150, blank=True)
    last_name = models.CharField(max_length=150, blank=True)
    role = models.CharField(max_length=16, default="attendee")
    locale = models.CharField(max_length=16, default="en")
    event_external_id = models.CharField(max_length=100, blank=True)
    event_name = models.CharField(max_length=300, blank=True)
    event_starts_at = models.DateTimeField(null=True, blank=True, db_index=True)
    event_timezone = models.CharField(max_length=64, default="UTC")
    event_venue = models.CharField(max_length=300, blank=True)
    last_event_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["portal", "external_id"], name="registration_portal_external_unique"),
        ]
        permissions = [("rebuild_registration", "Can rebuild a registration's projection from its event log")]
        # Support searches by registration id without the portal (the unique index leads with it).
        # Partial e-mail and last-name search use trigram indexes (migration 0003, PostgreSQL only).
        indexes = [
            models.Index(fields=["external_id"], name="registration_external_idx"),
            models.Index(fields=["event_external_id"], name="registration_event_ext_idx"),
        ]

    def __str__(self) -> str:
        """`R-1001 at pretix` when the portal is loaded anyway; never a query of its own (lists show
        hundreds of these)."""
        if Registration.portal.is_cached(self):
            return f"{self.external_id} at {self.portal.slug}"
        return self.external_id


class RegistrationEvent(models.Model):
    """An append-only domain event of one registration.

    (registration, version) is unique: two writers appending the same version cannot both commit
    (optimistic concurrency). `occurred_at` is the portal's timestamp; state is folded in that
    order, so late and reordered deliveries end in the same state.
    """

    class Type(models.TextChoices):
        CREATED = "created"
        UPDATED = "updated"
        CANCELLED = "cancelled"

    registration = models.ForeignKey(Registration, on_delete=models.PROTECT, related_name="events")
    version = models.PositiveIntegerField()
    type = models.CharField(max_length=16, choices=Type.choices)
    occurred_at = models.DateTimeField()
    data = models.JSONField()
    webhook_event = models.OneToOneField(
        "webhooks.WebhookEvent", on_delete=models.PROTECT, related_name="registration_event"
    )
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["registration", "version"], name="registration_event_version_unique"),
        ]
        ordering = ["registration_id", "version"]

    def __str__(self) -> str:
        return f"version {self.version}: {self.type}"


class ProcessedMessage(models.Model):
    """Dramatiq message ids already applied; written in the same transaction as their effect."""

    message_id = models.CharField(max_length=64, primary_key=True)
    processed_at = models.DateTimeField(auto_now_add=True)


class FailedApply(models.Model):
    """The dead letter of webhook events: an accepted event whose apply failed for good (retries
    exhausted or a permanent error). Kept in PostgreSQL, where staff see it and re-apply it; RabbitMQ's
    own dead-letter queue drops messages after 7 days and nobody looks there.

    One row per event id; a repeated failure updates it. `event_id` is the id the message named, kept
    even when no such event exists (error code `event_not_found`: then `webhook_event` is empty).
    `resolved_at` is set once an apply of the event succeeded (docs/failures.md).
    """

    event_id = models.UUIDField(unique=True, help_text="The webhook event the failed message named.")
    webhook_event = models.OneToOneField(
        "webhooks.WebhookEvent", on_delete=models.PROTECT, null=True, blank=True, related_name="failed_apply"
    )
    error_code = models.CharField(max_length=64, db_index=True)
    error_message = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0, help_text="Apply tries made, over every failure recorded.")
    failures = models.PositiveIntegerField(default=1, help_text="Times this event's apply was recorded as failed.")
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField(db_index=True)
    last_reapplied_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        permissions = [("reapply_failedapply", "Can re-apply a failed webhook event")]
        ordering = ["-last_failed_at"]
        verbose_name_plural = "failed applies"

    def __str__(self) -> str:
        return f"{self.event_id}: {self.error_code}"


class ApplyReapply(models.Model):
    """Audit record of one re-apply: who (a staff user, or "command" and the OS user), when, why, which
    event. Written in the same transaction as the outbox row that re-applies the event."""

    class Via(models.TextChoices):
        ADMIN = "admin"
        COMMAND = "command"

    event_id = models.UUIDField(db_index=True)
    failed_apply = models.ForeignKey(
        FailedApply, on_delete=models.PROTECT, null=True, blank=True, related_name="reapplies"
    )
    via = models.CharField(max_length=16, choices=Via.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    os_user = models.CharField(max_length=150, blank=True, default="")
    reason = models.TextField()
    outbox_message_id = models.UUIDField(help_text="The outbox row that carries the new apply message.")
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "re-apply (audit)"
        verbose_name_plural = "re-applies (audit)"

    @property
    def actor(self) -> str:
        if self.via == self.Via.COMMAND:
            return f"command (OS user {self.os_user or '?'})"
        return self.user.get_username() if self.user else "?"

    def __str__(self) -> str:
        return f"re-apply of {self.event_id} by {self.actor}"
