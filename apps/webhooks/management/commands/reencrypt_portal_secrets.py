from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.webhooks.services import portal_secrets_reencrypt


class Command(BaseCommand):
    help = (
        "Encrypt every portal signing secret again with the first key of WEBHOOK_SECRETS_KEY: run it after "
        "putting a new key first, before removing the old one (docs/deploy.md). Safe to run twice."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        count = portal_secrets_reencrypt()
        self.stdout.write(f"re-encrypted {count} portal secret(s) with the first key of WEBHOOK_SECRETS_KEY")
