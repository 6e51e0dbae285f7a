from __future__ import annotations

import getpass
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.registrations.failures import ReapplyRefused, failed_applies_unresolved, webhook_event_reapply
from apps.registrations.models import ApplyReapply


class Command(BaseCommand):
    help = (
        "Re-apply failed webhook events through the outbox (docs/failures.md): the given event ids, or "
        "--all unresolved failed applies. Audited with --reason and your OS user. Safe twice: an event "
        "already applied is left as it is."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("event_ids", nargs="*", metavar="EVENT_ID", help="Webhook event ids to re-apply.")
        parser.add_argument("--all", action="store_true", help="Every unresolved failed apply.")
        parser.add_argument("--reason", required=True, help="Why (kept in the audit record).")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["reason"].strip():
            raise CommandError("--reason must not be empty.")
        if bool(options["event_ids"]) == options["all"]:
            raise CommandError("Give event ids or --all (not both).")
        event_ids = failed_applies_unresolved() if options["all"] else options["event_ids"]
        os_user = getpass.getuser()
        queued = refused = 0
        for event_id in event_ids:
            try:
                audit = webhook_event_reapply(
                    event_id=event_id, reason=options["reason"], via=ApplyReapply.Via.COMMAND, os_user=os_user
                )
            except (ReapplyRefused, ValueError) as error:
                self.stderr.write(f"{event_id}: refused: {error}")
                refused += 1
                continue
            self.stdout.write(f"{event_id}: queued (outbox {audit.outbox_message_id})")
            queued += 1
        self.stdout.write(f"re-apply queued for {queued} event(s), {refused} refused")
        if refused:
            raise CommandError(f"{refused} event(s) could not be re-applied.")
