from __future__ import annotations

import json
import time
import uuid
from typing import Any

import requests
from django.core.management.base import BaseCommand, CommandError

from apps.webhooks.models import Portal
from apps.webhooks.signature import sign


def sample_payload(*, registration_id: str, email: str, event_type: str = "registration.created",
                   phone: str | None = None) -> dict[str, Any]:
    return {
        "type": event_type,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": {
            "registration_id": registration_id,
            "event": {"id": "EV-7", "name": "PyData Berlin", "starts_at": "2026-12-03T09:00:00+01:00",
                      "timezone": "Europe/Berlin", "venue": "bcc"},
            "attendee": {"email": email, "phone": phone, "first_name": "Ada", "last_name": "Lovelace",
                         "role": "attendee", "locale": "en"},
        },
    }


class Command(BaseCommand):
    help = "Sign a sample registration webhook with the portal's secret and POST it."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("slug", help="Portal slug.")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Base URL of the web process.")
        parser.add_argument("--type", default="registration.created", help="Event type.")
        parser.add_argument("--registration-id", default=None, help="Defaults to a random id.")
        parser.add_argument("--email", default="ada@example.org", help="Attendee e-mail.")
        parser.add_argument("--phone", default=None, help="Attendee phone (E.164), optional.")

    def handle(self, *args: Any, **options: Any) -> None:
        portal = Portal.objects.filter(slug=options["slug"]).first()
        secret = portal and portal.secrets.filter(active=True).order_by("-created_at").first()
        if not secret:
            raise CommandError(f"No portal '{options['slug']}' with an active secret; run create_portal first.")
        body = json.dumps(sample_payload(
            registration_id=options["registration_id"] or f"R-{uuid.uuid4().hex[:8]}", email=options["email"],
            event_type=options["type"], phone=options["phone"],
        )).encode()
        delivery_id, timestamp = f"msg_{uuid.uuid4().hex}", int(time.time())
        response = requests.post(
            f"{options['url'].rstrip('/')}/webhooks/{portal.slug}/", data=body, timeout=10,
            headers={"content-type": "application/json", "webhook-id": delivery_id,
                     "webhook-timestamp": str(timestamp),
                     "webhook-signature": sign(secret=secret.secret, delivery_id=delivery_id, timestamp=timestamp,
                                               body=body)},
        )
        self.stdout.write(f"{response.status_code} {response.text}")
