from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from apps.privacy.retention import data_retention_run


class Command(BaseCommand):
    help = (
        "Delete published outbox rows, processed-message ids and rate-limit windows past their retention, "
        "and blank the raw bodies and payloads of applied webhook events older than RETENTION_EVENT_BODIES_DAYS. "
        "Run it daily (the scheduler does, or cron); safe to run twice or concurrently."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        for name, count in data_retention_run(now=timezone.now()).items():
            self.stdout.write(f"{name}: {count}")
