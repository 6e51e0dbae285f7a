"""The pages support staff use, timed at a million notifications: `make bench-support`.

    .venv/bin/python -m bench.support_pages [--rows 1000000] [--requests 20] [--keep] [--reuse-db NAME]

Creates a fresh PostgreSQL database, migrates it, seeds `--rows` notifications with their
registrations (two notifications each), webhook events (one accepted per registration, plus one
rejected per 40, its payload naming the registration as a refused delivery's does), registration
events and attempts (one per notification, a second one for the retrying and dead ones) with
INSERT ... SELECT generate_series (secondary indexes are dropped for the load and built afterwards,
as for any bulk load), then VACUUM ANALYZE, and times each page through Django's test client logged
in as a superuser: `--requests` requests after two warm-ups, p50, p95, max and the number of SQL
queries of one request. The pages: the notification list (plain, dead, searched by e-mail and by
registration id), the notification and registration change pages, the attendee's story page, the
registration list searched by e-mail, delivery id (an applied and a rejected delivery) and
notification id, and the status page. A page whose URL does not resolve in this code is listed as
skipped. Drops the database at the end unless `--keep`; `--reuse-db NAME` times an existing (kept)
database again after migrating it, which is how docs/performance.md measured before/after on the
same rows.

It runs in this process (Django set up here) and reads RabbitMQ's queue depths for the status page
from BROKER_URL, or the default vhost of 127.0.0.1 (passive declares: it changes nothing there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stack import database_create, database_drop  # noqa: E402

SPAN_DAYS = 30  # the seeded rows' timestamps spread evenly over this many days, newest now
TABLES = [
    "registrations_registration",
    "webhooks_webhookevent",
    "registrations_registrationevent",
    "notifications_notification",
    "notifications_notificationattempt",
    "registrations_failedapply",
]
DEAD_CODES = ["smtp_permanent", "invalid_recipient", "retries_exhausted"]


@dataclass
class PageTiming:
    page: str
    url: str
    p50_ms: float | None = None
    p95_ms: float | None = None
    max_ms: float | None = None
    queries: int | None = None
    status: int | None = None
    listed: int | None = None  # rows the changelist counted (capped) or the story's entries: found something?
    skipped: str = ""


def _setup_django(database: str) -> None:
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{database}"
    os.environ.setdefault("BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "eventplatform.settings.base")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # lets the test client's host in; DEBUG stays off, as deployed


# --- seeding -------------------------------------------------------------------------------------


def _insert_select(cursor: Any, model: Any, expressions: dict[str, str], source: str) -> None:
    """INSERT INTO <model's table> (every column) SELECT <expressions> FROM <source>.

    Columns the bench does not know (added by a later migration) get their field's default, or
    NULL, so the seeding keeps working as the models grow; a column with neither fails loudly.
    Everything is inlined (no parameters), so `%` in the expressions is SQL's modulo.
    """
    from django.db import connection
    from psycopg import sql

    def literal(value: Any) -> str:
        return sql.Literal(value).as_string(connection.connection)

    columns, values = [], []
    for field in model._meta.concrete_fields:
        columns.append(field.column)
        if field.column in expressions:
            values.append(expressions[field.column])
        elif field.has_default():
            values.append(literal(field.get_db_prep_save(field.get_default(), connection)))
        elif field.null:
            values.append("NULL")
        else:
            raise RuntimeError(f"bench seeding: no value for {model._meta.db_table}.{field.column}")
    cursor.execute(
        f"INSERT INTO {model._meta.db_table} ({', '.join(columns)}) SELECT {', '.join(values)} FROM {source}"
    )


def _secondary_indexes(cursor: Any) -> list[tuple[str, str]]:
    """(name, definition) of every index on the seeded tables that backs no constraint."""
    cursor.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = 'public' AND i.tablename = ANY(%s) "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
        [TABLES],
    )
    return cursor.fetchall()


def seed(*, rows: int, out: Any) -> dict[str, float]:
    """Seed `rows` notifications and what they belong to; returns seconds per step."""
    from django.db import connection

    from apps.notifications.models import Notification, NotificationAttempt
    from apps.registrations.models import FailedApply, Registration, RegistrationEvent
    from apps.webhooks.models import Portal, WebhookEvent

    registrations = max(rows // 2, 1)
    timings: dict[str, float] = {}
    portal = Portal.objects.create(slug="bench", name="Bench portal")

    def step(name: str, function: Any) -> None:
        started = time.perf_counter()
        function()
        timings[name] = round(time.perf_counter() - started, 1)
        out.write(f"  {name}: {timings[name]} s\n")
        out.flush()

    with connection.cursor() as cursor:
        cursor.execute("SET maintenance_work_mem = '512MB'")
        cursor.execute("SET synchronous_commit = off")
        indexes = _secondary_indexes(cursor)
        for name, _ in indexes:
            cursor.execute(f'DROP INDEX "{name}"')
        # g: the registration number; t: its time, evenly over SPAN_DAYS, the last one now.
        series = (
            f"(SELECT g, now() - interval '{SPAN_DAYS} days' * (1 - g::float8 / {registrations}) AS t "
            f"FROM generate_series(1, {registrations}) g) s"
        )
        step(
            "registrations",
            lambda: _insert_select(
                cursor,
                Registration,
                {
                    "id": "g",
                    "portal_id": str(portal.id),
                    "external_id": "'R-' || g",
                    "status": "'active'",
                    "version": "1",
                    "email": "'attendee' || g || '@example.org'",
                    "phone": "'+49151' || lpad(g::text, 8, '0')",
                    "first_name": "'Ada'",
                    "last_name": "'Lovelace' || g",
                    "role": "'attendee'",
                    "locale": "'en'",
                    "event_external_id": "'EV-' || (g % 100)",
                    "event_name": "'PyData ' || (g % 100)",
                    "event_starts_at": "t + interval '20 days'",
                    "event_timezone": "'Europe/Berlin'",
                    "event_venue": "'bcc'",
                    "last_event_at": "t",
                    "created_at": "t",
                    "updated_at": "t",
                },
                series,
            ),
        )
        cursor.execute("SELECT setval(pg_get_serial_sequence('registrations_registration', 'id'), %s)", [registrations])
        body = (
            '\'{"type":"registration.created","data":{"registration_id":"R-\' || g || '
            '\'","attendee":{"email":"attendee\' || g || \'@example.org","first_name":"Ada"},'
            '"event":{"id":"EV-7","name":"PyData","timezone":"Europe/Berlin"}}}\''
        )
        rejected_body = (
            '\'{"type":"registration.created","data":{"registration_id":"R-\' || g || '
            '\'","attendee":{"email":"attendee\' || g || \'(at)example.org"}}}\''
        )
        step(
            "webhook events",
            lambda: (
                _insert_select(
                    cursor,
                    WebhookEvent,
                    {
                        "id": "md5('ev' || g)::uuid",
                        "portal_id": str(portal.id),
                        "delivery_id": "'msg_' || g",
                        "type": "'registration.created'",
                        "status": "'accepted'",
                        "raw_body": f"convert_to({body}, 'UTF8')",
                        "payload": f"({body})::jsonb",
                        "errors": "NULL",
                        "received_at": "t",
                    },
                    series,
                ),
                # The rejected one came first (a bad e-mail address), then the portal sent it again fixed:
                # the story page finds it by the payload's registration id, as no event log row names it.
                _insert_select(
                    cursor,
                    WebhookEvent,
                    {
                        "id": "md5('rej' || g)::uuid",
                        "portal_id": str(portal.id),
                        "delivery_id": "'msg_rej_' || g",
                        "type": "'registration.created'",
                        "status": "'rejected'",
                        "raw_body": f"convert_to({rejected_body}, 'UTF8')",
                        "payload": f"({rejected_body})::jsonb",
                        "errors": '\'{"data.attendee.email": ["Enter a valid email address."]}\'::jsonb',
                        "received_at": "t - interval '1 minute'",
                    },
                    series + " WHERE g % 40 = 0",
                ),
            ),
        )
        step(
            "registration events",
            lambda: _insert_select(
                cursor,
                RegistrationEvent,
                {
                    "id": "g",
                    "registration_id": "g",
                    "version": "1",
                    "type": "'created'",
                    "occurred_at": "t",
                    "data": "jsonb_build_object('email', 'attendee' || g || '@example.org', 'first_name', 'Ada')",
                    "webhook_event_id": "md5('ev' || g)::uuid",
                    "recorded_at": "t",
                },
                series,
            ),
        )
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('registrations_registrationevent', 'id'), %s)", [registrations]
        )
        # n: the notification number, two per registration (confirmation, reminder_24h); its status
        # from n % 100: 0-3 dead (4 %), 4 retrying, 5-6 pending, the rest sent.
        notifications = (
            f"(SELECT n, (n + 1) / 2 AS g, n % 100 AS r, now() - interval '{SPAN_DAYS} days' * "
            f"(1 - ((n + 1) / 2)::float8 / {registrations}) + (n % 2) * interval '3 seconds' AS t "
            f"FROM generate_series(1, {rows}) n) s"
        )
        status = "CASE WHEN r < 4 THEN 'dead' WHEN r = 4 THEN 'retrying' WHEN r < 7 THEN 'pending' ELSE 'sent' END"
        code = (
            f"CASE WHEN r < 4 THEN (ARRAY{DEAD_CODES!r})[1 + (n / 100) % {len(DEAD_CODES)}] "
            "WHEN r = 4 THEN 'smtp_transient' ELSE '' END"
        )
        step(
            "notifications",
            lambda: _insert_select(
                cursor,
                Notification,
                {
                    "id": "md5('n' || n)::uuid",
                    "registration_id": "g",
                    "kind": "CASE WHEN n % 2 = 1 THEN 'confirmation' ELSE 'reminder_24h' END",
                    "channel": "'email'",
                    "dedupe_key": "''",
                    "status": status,
                    "recipient": "'attendee' || g || '@example.org'",
                    "context": (
                        "jsonb_build_object('registration_id', 'R-' || g, 'email', 'attendee' || g || '@example.org', "
                        "'first_name', 'Ada', 'last_name', 'Lovelace', 'event', jsonb_build_object('name', "
                        "'PyData Berlin', 'starts_at', t + interval '20 days', 'timezone', 'Europe/Berlin', "
                        "'venue', 'bcc Berlin Congress Center, Alexanderstrasse 11'), 'locale', 'en')"
                    ),
                    "attempts": "CASE WHEN r < 5 THEN 2 WHEN r < 7 THEN 0 ELSE 1 END",
                    "last_error_code": code,
                    "last_error_message": "CASE WHEN r < 5 THEN '550 mailbox unavailable' ELSE '' END",
                    "provider": "CASE WHEN r BETWEEN 5 AND 6 THEN '' ELSE 'smtp' END",
                    "provider_message_id": "CASE WHEN r >= 7 THEN '<' || n || '@bench>' ELSE '' END",
                    "correlation_id": "md5('ev' || g)::uuid::text",
                    "source_received_at": "t",
                    "claimed_at": "NULL",
                    "next_attempt_at": "NULL",
                    "replayed_at": "NULL",
                    "created_at": "t",
                    "updated_at": "t + interval '2 seconds'",
                    "sent_at": "CASE WHEN r >= 7 THEN t + interval '2 seconds' END",
                },
                notifications,
            ),
        )
        attempt = {
            "notification_id": "md5('n' || n)::uuid",
            "started_at": "t + interval '1 second'",
            "duration_ms": "120",
            "provider": "'smtp'",
            "provider_message_id": "CASE WHEN r >= 7 THEN '<' || n || '@bench>' ELSE '' END",
        }
        step(
            "attempts",
            lambda: (
                _insert_select(
                    cursor,
                    NotificationAttempt,
                    {
                        **attempt,
                        "id": "n",
                        "number": "1",
                        "outcome": "CASE WHEN r >= 7 THEN 'sent' ELSE 'transient_error' END",
                        "error_code": "CASE WHEN r >= 7 THEN '' ELSE 'smtp_transient' END",
                        "error_message": "CASE WHEN r >= 7 THEN '' ELSE '421 try again later' END",
                    },
                    notifications + " WHERE r < 5 OR r >= 7",
                ),
                _insert_select(
                    cursor,
                    NotificationAttempt,
                    {
                        **attempt,
                        "id": f"{rows} + n",
                        "number": "2",
                        "started_at": "t + interval '2 seconds'",
                        "outcome": (
                            "CASE WHEN r < 4 AND (n / 100) % 3 < 2 THEN 'permanent_error' ELSE 'transient_error' END"
                        ),
                        "error_code": code,
                        "error_message": "'550 mailbox unavailable'",
                    },
                    notifications + " WHERE r < 5",
                ),
            ),
        )
        cursor.execute(
            "SELECT setval(pg_get_serial_sequence('notifications_notificationattempt', 'id'), %s)", [2 * rows]
        )
        step(
            "failed applies",
            lambda: _insert_select(
                cursor,
                FailedApply,
                {
                    "id": "g",
                    "event_id": "md5('ev' || g)::uuid",
                    "webhook_event_id": "md5('ev' || g)::uuid",
                    "error_code": "'actor_failed'",
                    "error_message": "'bench'",
                    "attempts": "20",
                    "first_failed_at": "t",
                    "last_failed_at": "t",
                    "resolved_at": "NULL",
                },
                series + " WHERE g % 5000 = 0",
            ),
        )
        cursor.execute("SELECT setval(pg_get_serial_sequence('registrations_failedapply', 'id'), %s)", [registrations])

        def build_indexes() -> None:
            for _, definition in indexes:
                cursor.execute(definition)

        step(f"indexes ({len(indexes)} rebuilt)", build_indexes)
        step("vacuum analyze", lambda: [cursor.execute(f"VACUUM ANALYZE {table}") for table in TABLES])
    return timings


# --- timing --------------------------------------------------------------------------------------


def pages() -> list[tuple[str, str]]:
    """(name, URL) of every page support uses, for one registration in the middle of the data.

    The registration is the last one at or below the middle whose number is a multiple of 40 (at a
    million: R-250000), so it has a rejected delivery and, where there are 5,000 or more, a failed
    apply: its story page shows every kind of entry, and the rejected delivery's id is searchable.
    """
    from apps.notifications.models import Notification
    from apps.registrations.models import Registration
    from apps.webhooks.models import WebhookEvent

    middle = Registration.objects.order_by("id")[Registration.objects.count() // 2]
    registration = (
        Registration.objects.filter(id__lte=middle.id - middle.id % 40).order_by("-id").first()
        if middle.id >= 40
        else None
    ) or middle
    notification = Notification.objects.filter(registration=registration).order_by("created_at").first()
    applied = WebhookEvent.objects.filter(registration_event__registration=registration).order_by("received_at").first()
    rejected = WebhookEvent.objects.filter(
        portal_id=registration.portal_id,
        status=WebhookEvent.Status.REJECTED,
        payload__data__registration_id=registration.external_id,
    ).first()
    partial_email = registration.email.split("@")[0] + "@exa"  # a partial e-mail, as support types it
    registrations = "/admin/registrations/registration/"
    return [
        ("notification list", "/admin/notifications/notification/"),
        ("notification list, status=dead", "/admin/notifications/notification/?status__exact=dead"),
        ("notification list, search e-mail", f"/admin/notifications/notification/?q={partial_email}"),
        (
            "notification list, search registration id",
            f"/admin/notifications/notification/?q={registration.external_id}",
        ),
        ("notification change page", f"/admin/notifications/notification/{notification.pk}/change/"),
        ("registration change page", f"{registrations}{registration.pk}/change/"),
        ("attendee story page", f"{registrations}{registration.pk}/story/"),
        ("registration list, search e-mail", f"{registrations}?q={partial_email}"),
        ("registration list, search delivery id", f"{registrations}?q={applied.delivery_id if applied else 'none'}"),
        (
            "registration list, search rejected delivery id",
            f"{registrations}?q={rejected.delivery_id if rejected else 'none'}",
        ),
        ("registration list, search notification id", f"{registrations}?q={notification.pk}"),
        ("status page", "/admin/status/"),
    ]


def time_pages(*, requests: int, out: Any, only: list[str] | None = None) -> list[PageTiming]:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import Resolver404, resolve

    user = User.objects.filter(username="bench-support").first() or User.objects.create_superuser(
        "bench-support", "support@example.org", "bench"
    )
    client = Client()
    client.force_login(user)
    results = []
    for name, url in pages():
        if only and not any(part in name for part in only):
            continue
        timing = PageTiming(page=name, url=url)
        try:
            # The admin's catch-alls (unnamed) answer any path with a redirect: not a page.
            resolves = resolve(url.split("?")[0]).url_name is not None
        except Resolver404:
            resolves = False
        if not resolves:
            timing.skipped = "URL does not resolve in this code"
            results.append(timing)
            out.write(f"  {name}: skipped ({timing.skipped})\n")
            continue
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        timing.status = response.status_code
        context = (response.context or {}) if response.status_code == 200 else {}
        if context.get("cl") is not None:
            timing.listed = context["cl"].result_count
        elif context.get("story") is not None:  # the story page: its entries, to see that it found them all
            timing.listed = len(context["story"].entries)
        timing.queries = len(queries.captured_queries)
        client.get(url)
        samples = []
        for _ in range(requests):
            started = time.perf_counter()
            response = client.get(url)
            samples.append((time.perf_counter() - started) * 1000)
            timing.status = response.status_code
        samples.sort()
        timing.p50_ms = round(statistics.median(samples), 1)
        timing.p95_ms = round(samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))], 1)
        timing.max_ms = round(samples[-1], 1)
        results.append(timing)
        out.write(f"  {name}: p50 {timing.p50_ms} ms, p95 {timing.p95_ms} ms (HTTP {timing.status})\n")
        out.flush()
    return results


def table(results: list[PageTiming]) -> str:
    lines = [
        "| page | p50 ms | p95 ms | max ms | SQL queries | rows listed (story: entries) | HTTP |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.skipped:
            lines.append(f"| {r.page} | skipped: {r.skipped} | | | | | |")
        else:
            listed = "" if r.listed is None else r.listed
            lines.append(f"| {r.page} | {r.p50_ms} | {r.p95_ms} | {r.max_ms} | {r.queries} | {listed} | {r.status} |")
    return "\n".join(lines)


def _drop_when_reachable(database: str, timeout: float = 120) -> None:
    """Drop the database, waiting out a PostgreSQL restart (the machine's server is shared)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            database_drop(database)
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="Notifications to seed (default 1,000,000).")
    parser.add_argument("--requests", type=int, default=20, help="Timed requests per page (after 2 warm-ups).")
    parser.add_argument("--db-name", default=f"support_bench_{os.getpid()}", help="The database to create.")
    parser.add_argument("--reuse-db", default="", help="Time this existing (kept) database instead of seeding one.")
    parser.add_argument("--keep", action="store_true", help="Keep the database at the end (for --reuse-db).")
    parser.add_argument("--only", default="", help="Comma-separated parts of page names: time just those pages.")
    parser.add_argument("--json-out", default="", help="Also write the figures as JSON to this file.")
    args = parser.parse_args(argv)
    out = sys.stdout
    database = args.reuse_db or args.db_name
    if not args.reuse_db:
        database_create(database)
    try:
        _setup_django(database)
        from django.core.management import call_command

        started = time.perf_counter()
        call_command("migrate", verbosity=0)
        out.write(f"database {database}: migrated in {time.perf_counter() - started:.1f} s\n")
        seeding: dict[str, float] = {}
        if not args.reuse_db:
            out.write(f"seeding {args.rows} notifications\n")
            seeding = seed(rows=args.rows, out=out)
        out.write(f"timing {args.requests} requests per page\n")
        results = time_pages(requests=args.requests, out=out, only=[p for p in args.only.split(",") if p])
        out.write(table(results) + "\n")
        if args.json_out:
            Path(args.json_out).write_text(
                json.dumps(
                    {
                        "rows": args.rows,
                        "requests": args.requests,
                        "seeding_seconds": seeding,
                        "pages": [asdict(r) for r in results],
                    },
                    indent=2,
                )
            )
        return 0 if all(r.skipped or r.status == 200 for r in results) else 1
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            _drop_when_reachable(database)


if __name__ == "__main__":
    sys.exit(main())
