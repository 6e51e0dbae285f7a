"""Bench-only Dramatiq actors: the raw limits the real workers are compared with.

Loaded by a Dramatiq worker process next to django_dramatiq.setup, so they run with the project's
broker and middleware (DRAMATIQ_BROKER / DRAMATIQ_MIDDLEWARE) and whatever --processes/--threads
the real workers get:

    python -m dramatiq --path . -p 2 -t 8 django_dramatiq.setup bench.actors --queues bench_noop

* `bench_noop` does nothing: Dramatiq's own cost per message (consume, middleware, ack).
* `bench_email` builds the same confirmation e-mail the real worker sends (rendered from the
  project's templates) and sends it through the project's EmailProvider, over one SMTP connection
  reused per worker thread, with no database work: the ceiling of notification_send.

Each worker process counts what it processed and, from a background thread, writes the count and
the first-start/last-done times to $BENCH_STATS_DIR/<pid>.json every 50 ms; nothing is written
per message.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from pathlib import Path

import dramatiq

from apps.notifications import rendering
from apps.notifications.channels.email.providers import EmailProvider
from apps.notifications.providers import OutgoingMessage
from apps.registrations import projection

STATS_DIR = Path(os.environ.get("BENCH_STATS_DIR", "/tmp"))
RECIPIENT = "bench-actor@example.org"


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, list[float]] = {}  # actor -> [count, first start, last done]
        self.reporter: threading.Thread | None = None

    def record(self, actor: str, started: float) -> None:
        done = time.time()
        with self.lock:
            entry = self.counts.setdefault(actor, [0, started, done])
            entry[0] += 1
            entry[1] = min(entry[1], started)
            entry[2] = max(entry[2], done)
            if self.reporter is None:
                self.reporter = threading.Thread(target=self._report, name="bench-stats", daemon=True)
                self.reporter.start()

    def _report(self) -> None:
        path = STATS_DIR / f"{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        while True:
            with self.lock:
                data = json.dumps(self.counts)
            tmp.write_text(data)
            tmp.replace(path)
            time.sleep(0.05)


STATS = _Stats()


def _confirmation_context() -> dict:
    """The context notification_create stores for a new registration (the projection's state)."""
    data = {
        "registration_id": "R-BENCH",
        "event": {
            "id": "EV-7",
            "name": "PyData Berlin 2026: Data, Science and the Python Community",
            "starts_at": "2026-12-03T09:00:00+01:00",
            "timezone": "Europe/Berlin",
            "venue": "bcc Berlin Congress Center, Alexanderstraße 11, 10178 Berlin",
        },
        "attendee": {
            "email": RECIPIENT,
            "phone": None,
            "first_name": "Ada",
            "last_name": "Lovelace",
            "role": "attendee",
            "locale": "en",
        },
    }
    event = projection.DomainEvent(
        type="created", occurred_at=dt.datetime.now(dt.UTC).isoformat(), data=projection.flatten_payload(data)
    )
    return projection.fold([event]) or {}


CONTEXT = _confirmation_context()
_provider = EmailProvider(name="bench-email")


@dramatiq.actor(queue_name="bench_noop", actor_name="bench_noop", max_retries=0)
def bench_noop() -> None:
    STATS.record("bench_noop", time.time())


@dramatiq.actor(queue_name="bench_email", actor_name="bench_email", max_retries=0)
def bench_email() -> None:
    started = time.time()
    rendered = rendering.render(kind="confirmation", channel="email", context=CONTEXT)
    _provider.send(
        OutgoingMessage(
            notification_id=str(uuid.uuid4()),
            recipient=RECIPIENT,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
        )
    )
    STATS.record("bench_email", started)
