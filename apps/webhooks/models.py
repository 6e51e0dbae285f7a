from __future__ import annotations

import uuid

from django.db import models
from django.db.models import F
from django.db.models.fields.json import KeyTransform

from apps.webhooks.senders import (
    validate_email_from,
    validate_locale,
    validate_reply_to,
    validate_sms_sender_id,
)
from eventplatform.encryption import EncryptedTextField


class Portal(models.Model):
    """A third-party registration portal allowed to call our webhook."""

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Requests per minute before 429; empty means no limit."
    )
    # The organiser's sender (CONTRACT section 9; apps/webhooks/senders.py parses and validates each).
    # Empty: DEFAULT_FROM_EMAIL, no Reply-To, SMS_FROM.
    email_from = models.CharField(
        "From",
        max_length=320,
        blank=True,
        validators=[validate_email_from],
        help_text="Display name and address, e.g. “Ada Conf <hello@conf.example.com>”, on a domain of "
        "EMAIL_SENDER_DOMAINS. Empty: the platform's DEFAULT_FROM_EMAIL.",
    )
    reply_to = models.CharField(
        "Reply-To",
        max_length=320,
        blank=True,
        validators=[validate_reply_to],
        help_text="Where attendees' replies go (any address). Empty: no Reply-To.",
    )
    sms_sender_id = models.CharField(
        "SMS sender id",
        max_length=11,
        blank=True,
        validators=[validate_sms_sender_id],
        help_text="Alphanumeric sender shown on SMS: 1–11 letters and digits, at least one letter. "
        "Empty: the platform's SMS_FROM number.",
    )
    default_locale = models.CharField(
        max_length=16,
        default="en",
        validators=[validate_locale],
        help_text="The language of attendees whose own locale has no wording (fr-CA → fr → this → en).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        permissions = [("rotate_portal_secret", "Can rotate a portal's signing secret")]

    def __str__(self) -> str:
        return self.slug


class PortalSecret(models.Model):
    """One signing secret; a portal has several while a secret is being rotated.

    Stored encrypted (eventplatform.encryption, key from WEBHOOK_SECRETS_KEY; migration 0008): a
    database dump forges no webhook. Encryption is randomised, so the database cannot hold a
    (portal, secret) uniqueness constraint; `portal_create` keeps a portal's secrets distinct under
    the portal's row lock instead.
    """

    portal = models.ForeignKey(Portal, on_delete=models.CASCADE, related_name="secrets")
    secret = EncryptedTextField(help_text="whsec_ followed by base64 key bytes (stored encrypted)")
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.portal.slug} secret #{self.pk}"


class WebhookEvent(models.Model):
    """An immutable record of one signed delivery, accepted or rejected.

    The database refuses UPDATE and DELETE on this table (trigger in migration 0002): it is the
    event log the registrations are derived from.
    """

    class Status(models.TextChoices):
        ACCEPTED = "accepted"
        REJECTED = "rejected"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Indexed by the unique constraint, which leads with it.
    portal = models.ForeignKey(Portal, on_delete=models.PROTECT, related_name="events", db_index=False)
    delivery_id = models.CharField(max_length=255)
    type = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices)
    raw_body = models.BinaryField()
    payload = models.JSONField(null=True)
    errors = models.JSONField(null=True, blank=True)
    received_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["portal", "delivery_id"], name="webhook_event_delivery_unique"),
        ]
        indexes = [
            # Support searches by delivery id without the portal (the unique index leads with it).
            models.Index(fields=["delivery_id"], name="webhook_event_delivery_idx"),
            # The admin's "rejected" filter (few rows); no `LIKE` twin, no index on `type` (three values).
            models.Index(fields=["status"], name="webhook_event_status_idx"),
            # The attendee's story finds the deliveries its event log does not name (rejected ones) by
            # the payload's registration id: `payload__data__registration_id=` compiles to
            # `payload #> '{data,registration_id}'` on PostgreSQL, which this expression index answers
            # (migration 0006 builds it on PostgreSQL only, concurrently; SQLite scans its small table).
            models.Index(
                F("portal"),
                KeyTransform("registration_id", KeyTransform("data", "payload")),
                name="webhook_event_payload_reg_idx",
            ),
        ]
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.portal_id}:{self.delivery_id} {self.type}"


class RateWindow(models.Model):
    """Per-portal request counter for one minute, shared by all web workers."""

    portal = models.ForeignKey(Portal, on_delete=models.CASCADE)
    window_start = models.DateTimeField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["portal", "window_start"], name="rate_window_unique")]
