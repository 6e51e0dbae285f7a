from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.webhooks.services import portal_create


class Command(BaseCommand):
    help = "Create a portal (or add a signing secret to it) and print its secret. Idempotent."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("slug", help="URL slug: POST /webhooks/<slug>/")
        parser.add_argument("--name", help="Display name (defaults to the slug).")
        parser.add_argument("--secret", help="whsec_... secret to use; generated when omitted. Giving a new "
                            "secret for an existing portal adds it (rotation); the old one stays active.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            portal, secret, created = portal_create(
                slug=options["slug"], name=options["name"], secret=options["secret"]
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"{'created' if created else 'exists'} portal {portal.slug}")
        self.stdout.write(f"secret {secret}")
