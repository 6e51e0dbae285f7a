from __future__ import annotations

import datetime as dt
import json
import re
import time
import uuid
import zoneinfo
from typing import Any

import requests
from django.core.management.base import BaseCommand, CommandError
from django.utils.dateparse import parse_datetime

from apps.webhooks.models import Portal
from apps.webhooks.signature import sign

SAMPLE_TIMEZONE = "Europe/Berlin"
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def duration(text: str) -> dt.timedelta:
    """`90m`, `2h`, `1d`, `30s`: how long from now the sample event starts."""
    match = _DURATION.match(text.strip())
    if not match:
        raise CommandError(f"--starts-in takes a number and a unit (s, m, h, d), e.g. 90m, not {text!r}.")
    return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def default_starts_at(*, now: dt.datetime, timezone_name: str = SAMPLE_TIMEZONE) -> dt.datetime:
    """Tomorrow 09:00 in the event's zone: always in the future, and the 24 h reminder comes due
    during the day before (the hard-coded date it replaces was soon in the past)."""
    zone = zoneinfo.ZoneInfo(timezone_name)
    tomorrow = now.astimezone(zone).date() + dt.timedelta(days=1)
    return dt.datetime.combine(tomorrow, dt.time(9, 0), tzinfo=zone)


def sample_payload(
    *,
    registration_id: str,
    email: str,
    event_type: str = "registration.created",
    phone: str | None = None,
    starts_at: dt.datetime | None = None,
    event_name: str = "PyData Berlin",
    venue: str | None = "bcc",
    first_name: str = "Ada",
    last_name: str = "Lovelace",
    timezone_name: str = SAMPLE_TIMEZONE,
) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    starts_at = (starts_at or default_starts_at(now=now, timezone_name=timezone_name)).astimezone(
        zoneinfo.ZoneInfo(timezone_name)
    )
    return {
        "type": event_type,
        "timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": {
            "registration_id": registration_id,
            "event": {
                "id": "EV-7",
                "name": event_name,
                "starts_at": starts_at.isoformat(timespec="seconds"),
                "timezone": timezone_name,
                "venue": venue,
            },
            "attendee": {
                "email": email,
                "phone": phone,
                "first_name": first_name,
                "last_name": last_name,
                "role": "attendee",
                "locale": "en",
            },
        },
    }


class Command(BaseCommand):
    help = (
        "Sign a sample registration webhook with the portal's secret and POST it. The sample event starts "
        "tomorrow at 09:00 Europe/Berlin unless --starts-at or --starts-in says otherwise."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("slug", help="Portal slug.")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Base URL of the web process.")
        parser.add_argument(
            "--type",
            default="registration.created",
            choices=["registration.created", "registration.updated", "registration.cancelled"],
            help="Event type; updated and cancelled need --registration-id.",
        )
        parser.add_argument("--registration-id", default=None, help="Defaults to a random id.")
        parser.add_argument("--email", default="ada@example.org", help="Attendee e-mail.")
        parser.add_argument("--phone", default=None, help="Attendee phone (E.164), optional.")
        parser.add_argument("--first-name", default="Ada", help="Attendee first name (change it in an update).")
        parser.add_argument("--last-name", default="Lovelace", help="Attendee last name.")
        parser.add_argument("--event-name", default="PyData Berlin", help="Event name (change it in an update).")
        parser.add_argument("--venue", default="bcc", help="Event venue (change it in an update).")
        starts = parser.add_mutually_exclusive_group()
        starts.add_argument(
            "--starts-at", default=None, help="Event start, ISO 8601 with offset, e.g. 2026-12-24T18:00:00+01:00."
        )
        starts.add_argument(
            "--starts-in", default=None, help="Event start from now, e.g. 90m (shows the 1 h reminder), 25h, 2d."
        )
        parser.add_argument(
            "--delivery-id",
            default=None,
            help="The webhook-id to send (default: a new one). Send one twice to see a duplicate.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        portal = Portal.objects.filter(slug=options["slug"]).first()
        secret = portal and portal.secrets.filter(active=True).order_by("-created_at").first()
        if portal is None or not secret:
            raise CommandError(f"No portal '{options['slug']}' with an active secret; run create_portal first.")
        event_type = options["type"]
        if event_type != "registration.created" and not options["registration_id"]:
            raise CommandError(f"{event_type} needs --registration-id (the id a registration.created printed).")
        changes = [
            f"--{name}"
            for name in ("first-name", "event-name", "venue", "starts-at", "starts-in")
            if options[name.replace("-", "_")] != self._default(name)
        ]
        registration_id = options["registration_id"] or f"R-{uuid.uuid4().hex[:8]}"
        body = json.dumps(
            sample_payload(
                registration_id=registration_id,
                email=options["email"],
                event_type=event_type,
                phone=options["phone"],
                starts_at=self._starts_at(options),
                event_name=options["event_name"],
                venue=options["venue"] or None,
                first_name=options["first_name"],
                last_name=options["last_name"],
            )
        ).encode()
        delivery_id, timestamp = options["delivery_id"] or f"msg_{uuid.uuid4().hex}", int(time.time())
        url = options["url"].rstrip("/")
        try:
            response = requests.post(
                f"{url}/webhooks/{portal.slug}/",
                data=body,
                timeout=10,
                headers={
                    "content-type": "application/json",
                    "webhook-id": delivery_id,
                    "webhook-timestamp": str(timestamp),
                    "webhook-signature": sign(
                        secret=secret.secret, delivery_id=delivery_id, timestamp=timestamp, body=body
                    ),
                },
            )
        except requests.ConnectionError:
            self.stderr.write(f"nothing answers at {url}: is `make run` running?")
            raise SystemExit(1) from None
        self.stdout.write(f"{response.status_code} {response.text}")
        self.stdout.write(f"registration {registration_id}, delivery {delivery_id}")
        if event_type == "registration.updated" and not changes:
            self.stdout.write(
                "Nothing the attendee sees changed, so no update e-mail is sent: change a field with "
                "--event-name, --venue, --starts-in/--starts-at or --first-name."
            )
        elif event_type == "registration.created" and response.status_code == 202:
            self.stdout.write(
                f"Change it: send_test_webhook {portal.slug} --url {url} --type registration.updated "
                f"--registration-id {registration_id} --venue 'Room 2'"
            )

    @staticmethod
    def _default(name: str) -> str | None:
        return {"first-name": "Ada", "event-name": "PyData Berlin", "venue": "bcc"}.get(name)

    @staticmethod
    def _starts_at(options: dict[str, Any]) -> dt.datetime | None:
        if options["starts_in"]:
            return dt.datetime.now(dt.UTC) + duration(options["starts_in"])
        if options["starts_at"]:
            parsed = parse_datetime(options["starts_at"])
            if parsed is None or parsed.tzinfo is None:
                raise CommandError(f"--starts-at takes ISO 8601 with an offset, not {options['starts_at']!r}.")
            return parsed
        return None
