from __future__ import annotations

from typing import Any

import structlog
from django.core.management.base import BaseCommand, CommandError

from apps.registrations.models import Registration
from apps.registrations.services import registration_drift, registration_rebuild

log = structlog.get_logger("registrations")


class Command(BaseCommand):
    help = (
        "Recompute registration projections from their event logs (all, or those given). With --verify, "
        "change nothing: fold every event log, print each registration whose stored state differs, and "
        "exit 1 if any does."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("external_ids", nargs="*", help="Registration ids (default: all).")
        parser.add_argument("--portal", help="Only this portal's registrations.")
        parser.add_argument(
            "--verify",
            action="store_true",
            help="Only compare the stored projections with their folded event logs; exit 1 on drift.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        registrations = Registration.objects.select_related("portal").order_by("pk")
        if options["portal"]:
            registrations = registrations.filter(portal__slug=options["portal"])
        if options["external_ids"]:
            registrations = registrations.filter(external_id__in=options["external_ids"])
        if options["verify"]:
            self._verify(registrations)
            return
        count = 0
        for registration in registrations.iterator():
            registration_rebuild(registration=registration)
            count += 1
        self.stdout.write(f"rebuilt {count} registration(s)")

    def _verify(self, registrations: Any) -> None:
        checked = drifted = 0
        for registration in registrations.iterator(chunk_size=500):
            checked += 1
            drift = registration_drift(registration=registration)
            if not drift:
                continue
            drifted += 1
            details = "; ".join(
                f"{field}: stored {stored!r}, from events {expected!r}" for field, (stored, expected) in drift.items()
            )
            self.stdout.write(f"drift {registration.portal.slug}/{registration.external_id}: {details}")
            log.warning(
                "registration.projection_drift",
                registration=registration.external_id,
                portal=registration.portal.slug,
                fields=sorted(drift),
                error_code="projection_drift",
            )
        self.stdout.write(f"verified {checked} registration(s): {drifted} drifted")
        if drifted:
            raise CommandError(
                f"{drifted} registration(s) differ from their event logs; run rebuild_registrations to repair them.",
                returncode=1,
            )
