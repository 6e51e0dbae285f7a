from __future__ import annotations

import datetime as dt
import getpass
import os
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.notifications import channels
from apps.notifications.models import Notification
from apps.notifications.selectors import notifications_to_replay
from apps.notifications.services import notification_replay


def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise CommandError(f"--id: not a notification id: {value!r}") from None


def _since(value: str) -> dt.datetime:
    parsed = parse_datetime(value)
    if parsed is None:
        raise CommandError(f"--since: not an ISO 8601 date-time: {value!r}")
    return timezone.make_aware(parsed) if timezone.is_naive(parsed) else parsed


def _os_user() -> str:
    """Who ran the command, for the audit; a container without a passwd entry still gets its uid."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


class Command(BaseCommand):
    help = (
        "Send dead notifications again: those named by --id, or those matching the filters. "
        "Prints each notification it queued. Every replay is audited (NotificationReplay) with --reason, "
        "this command as the actor and the OS user running it."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--id",
            action="append",
            dest="ids",
            default=[],
            metavar="UUID",
            type=_uuid,
            help="A notification to replay (repeatable).",
        )
        parser.add_argument(
            "--since", type=_since, help="Only notifications that died at or after this ISO 8601 time (naive = UTC)."
        )
        parser.add_argument("--kind", choices=Notification.Kind.values, help="Only this kind.")
        parser.add_argument("--channel", choices=[c.name for c in channels.channels()], help="Only this channel.")
        parser.add_argument("--error-code", help="Only notifications whose last error has this code.")
        parser.add_argument(
            "--include-sent", action="store_true", help="Also re-send SENT notifications; only together with --id."
        )
        parser.add_argument("--dry-run", action="store_true", help="Print what would be queued; change nothing.")
        parser.add_argument(
            "--reason",
            default="",
            help="Why these are sent again; required unless --dry-run, kept in the replay audit.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        filters = {key: options[key] for key in ("since", "kind", "channel", "error_code") if options[key]}
        if options["include_sent"] and not options["ids"]:
            raise CommandError("--include-sent needs explicit --id values.")
        if not options["ids"] and not filters:
            raise CommandError("Name notifications with --id, or narrow with --since/--kind/--channel/--error-code.")
        reason = options["reason"].strip()
        if not reason and not options["dry_run"]:
            raise CommandError(
                '--reason is required: say why these are sent again, e.g. --reason "mail server '
                'fixed, ticket 4711" (it is recorded in the replay audit with your OS user).'
            )
        os_user = _os_user()
        candidates = list(notifications_to_replay(ids=options["ids"], include_sent=options["include_sent"], **filters))
        self._report_skipped(options["ids"], {str(notification.id) for notification in candidates})
        queued = 0
        for notification in candidates:
            line = (
                f"{notification.id} {notification.kind}/{notification.channel} {notification.status} "
                f"{notification.last_error_code or '-'} registration {notification.registration.external_id}"
            )
            if options["dry_run"]:
                self.stdout.write(f"would queue {line}")
                queued += 1
            else:
                result = notification_replay(
                    notification_id=notification.id,
                    include_sent=options["include_sent"],
                    reason=reason,
                    command="replay_notifications",
                    os_user=os_user,
                )
                if result:
                    self.stdout.write(f"queued {line}")
                    queued += 1
                elif result.refused:
                    self.stdout.write(f"refused {line}: {result.refused}: {result.message}")
        self.stdout.write(f"{'would queue' if options['dry_run'] else 'queued'} {queued} notification(s)")

    def _report_skipped(self, ids: list[str], replayable: set[str]) -> None:
        """Say why a named notification is left alone, instead of silently doing less than asked."""
        missing = set(ids) - replayable
        statuses = {
            str(pk): status for pk, status in Notification.objects.filter(id__in=missing).values_list("id", "status")
        }
        for notification_id in sorted(missing):
            status = statuses.get(notification_id)
            reason = f"status {status}" if status else "no such notification"
            self.stdout.write(f"skipped {notification_id}: {reason}")
