from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.registrations.models import Registration
from apps.registrations.services import registration_rebuild


class Command(BaseCommand):
    help = "Recompute registration projections from their event logs (all, or those given)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("external_ids", nargs="*", help="Registration ids (default: all).")
        parser.add_argument("--portal", help="Only this portal's registrations.")

    def handle(self, *args: Any, **options: Any) -> None:
        registrations = Registration.objects.all()
        if options["portal"]:
            registrations = registrations.filter(portal__slug=options["portal"])
        if options["external_ids"]:
            registrations = registrations.filter(external_id__in=options["external_ids"])
        count = 0
        for registration in registrations.iterator():
            registration_rebuild(registration=registration)
            count += 1
        self.stdout.write(f"rebuilt {count} registration(s)")
