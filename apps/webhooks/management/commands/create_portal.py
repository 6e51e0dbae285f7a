from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.webhooks.selectors import portal_active_secrets
from apps.webhooks.services import portal_create


class Command(BaseCommand):
    help = "Create a portal (or add a signing secret to it, or set its sender) and print its secret. Idempotent."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("slug", help="URL slug: POST /webhooks/<slug>/")
        parser.add_argument("--name", help="Display name (defaults to the slug).")
        parser.add_argument(
            "--secret",
            help="whsec_... secret to use; generated when omitted. Giving a new "
            "secret for an existing portal adds it (rotation); the old one stays active.",
        )
        parser.add_argument(
            "--email-from",
            help='The portal\'s sender, "Name <address>", on a domain of EMAIL_SENDER_DOMAINS; '
            'sets or changes it ("" clears it: DEFAULT_FROM_EMAIL).',
        )
        parser.add_argument("--reply-to", help='Where replies go (any address); sets or changes it ("" clears it).')

    def handle(self, *args: Any, **options: Any) -> None:
        # Read before, to say what happened: a new secret beside active ones is a rotation, and the
        # person running this must know the old secret still signs until they deactivate it.
        before = portal_active_secrets(slug=options["slug"])
        try:
            portal, secret, created = portal_create(
                slug=options["slug"],
                name=options["name"],
                secret=options["secret"],
                email_from=options["email_from"],
                reply_to=options["reply_to"],
            )
        except ValueError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(f"{'created' if created else 'exists'} portal {portal.slug}")
        self.stdout.write(f"sender {portal.email_from or settings.DEFAULT_FROM_EMAIL}")
        if portal.reply_to:
            self.stdout.write(f"reply-to {portal.reply_to}")
        if before and secret not in before:
            self.stdout.write(
                f"added a second active secret: the portal now has {len(before) + 1} active secrets and accepts "
                "each of them; deactivate the old one in the admin once the portal signs with the new one"
            )
        self.stdout.write(f"secret {secret}")
