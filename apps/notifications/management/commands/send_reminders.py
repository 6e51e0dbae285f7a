from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from apps.notifications.reminders import reminder_windows, reminders_create
from apps.notifications.services import notifications_rescue_stalled


class Command(BaseCommand):
    help = ("Create reminder_24h / reminder_1h notifications for active registrations whose event starts "
            "within the reminder windows, and rescue notifications whose retry message was lost. Run it "
            "every few minutes; safe to run twice or concurrently.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--list", action="store_true", help="Also print every notification created.")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        created = reminders_create(now=now)
        for kind, (start, end) in reminder_windows(now).items():
            self.stdout.write(f"{kind}: created {len(created[kind])} notification(s) for events starting in "
                              f"({start.isoformat(timespec='seconds')}, {end.isoformat(timespec='seconds')}]")
            if options["list"]:
                for notification in created[kind]:
                    self.stdout.write(f"  {notification.id} {notification.channel} "
                                      f"{notification.registration.external_id}")
        rescued = notifications_rescue_stalled(now=now)
        self.stdout.write(f"stalled: rescued {rescued} notification(s) whose retry message was lost")
