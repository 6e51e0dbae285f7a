from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand

from apps.privacy.erasure import attendee_erase


class Command(BaseCommand):
    help = (
        "Erase one person's personal data everywhere it is stored (webhook events, registration events, the "
        "registration, notifications, attempts), found by e-mail address, and record that it was done "
        "(who, when, a hash of the address). Safe to run twice: the second run finds nothing more."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("email", help="The person's e-mail address (matched case-insensitively).")
        parser.add_argument(
            "--requested-by", default=None, help="Who asked for it, recorded in the audit row (default: the OS user)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        record = attendee_erase(email=options["email"], requested_by=options["requested_by"] or getpass.getuser())
        self.stdout.write(
            f"erasure #{record.pk} recorded (sha256 {record.email_sha256[:12]}…, by {record.requested_by})"
        )
        for table, count in record.counts.items():
            self.stdout.write(f"  {table}: {count} redacted")
