from __future__ import annotations

from django.db import models


class Registration(models.Model):
    """The current state of one registration: a projection, always derivable from its events.

    `rebuild_registrations` recomputes it from RegistrationEvent rows; nothing else is the truth.
    """

    class Status(models.TextChoices):
        ACTIVE = "active"
        CANCELLED = "cancelled"

    portal = models.ForeignKey("webhooks.Portal", on_delete=models.PROTECT, related_name="registrations")
    external_id = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, db_index=True)
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
        # Support searches by registration id without the portal (the unique index leads with it).
        # Partial e-mail and last-name search use trigram indexes (migration 0003, PostgreSQL only).
        indexes = [
            models.Index(fields=["external_id"], name="registration_external_idx"),
            models.Index(fields=["event_external_id"], name="registration_event_ext_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.portal_id}:{self.external_id}"


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
    webhook_event = models.OneToOneField("webhooks.WebhookEvent", on_delete=models.PROTECT,
                                         related_name="registration_event")
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["registration", "version"], name="registration_event_version_unique"),
        ]
        ordering = ["registration_id", "version"]


class ProcessedMessage(models.Model):
    """Dramatiq message ids already applied; written in the same transaction as their effect."""

    message_id = models.CharField(max_length=64, primary_key=True)
    processed_at = models.DateTimeField(auto_now_add=True)


class FailedApply(models.Model):
    """The dead letter of webhook events: an accepted event whose apply failed for good (retries
    exhausted or a permanent error). Kept in PostgreSQL, where staff see it and re-apply it; RabbitMQ's
    own dead-letter queue drops messages after 7 days and nobody looks there.

    One row per event; a repeated failure updates it. `resolved_at` is set once a re-apply succeeded.
    """

    webhook_event = models.OneToOneField("webhooks.WebhookEvent", on_delete=models.PROTECT,
                                         related_name="failed_apply")
    error_code = models.CharField(max_length=64)
    error_message = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0, help_text="Apply tries made before it was recorded.")
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField(db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True, db_index=True)

    def __str__(self) -> str:
        return f"{self.webhook_event_id}: {self.error_code}"
