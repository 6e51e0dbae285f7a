from __future__ import annotations

from django.db import models


class ErasureRecord(models.Model):
    """That an erasure request was carried out: when, by whom, and how much it redacted.

    The e-mail address itself is not kept (that would defeat the erasure); its SHA-256 (of the
    trimmed, lower-cased address) lets staff answer "was this person's data erased, and when?"
    for an address someone gives them.
    """

    email_sha256 = models.CharField(max_length=64, db_index=True)
    requested_by = models.CharField(max_length=150, help_text="The OS user who ran erase_attendee.")
    erased_at = models.DateTimeField(db_index=True)
    counts = models.JSONField(default=dict, help_text="Rows redacted per table.")

    class Meta:
        ordering = ["-erased_at"]

    def __str__(self) -> str:
        return f"erasure {self.email_sha256[:12]}… at {self.erased_at:%Y-%m-%d %H:%M}"
