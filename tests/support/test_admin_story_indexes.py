"""The attendee's story page and the registration searches support uses to reach it stay index
lookups at a million rows (docs/performance.md, "Support pages at a million rows"): every query the
page sends, explained with sequential scans discouraged, finds an index to use; the deliveries the
event log does not name are found through webhook_event_payload_reg_idx. Speed itself is
bench/support_pages.py's; on a handful of rows the planner would prefer a scan, hence
`enable_seqscan = off`, so the plan shows whether an index matches the SQL Django sends."""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.registrations.models import Registration
from apps.registrations.selectors import webhook_events_of_registration
from apps.webhooks.models import Portal, WebhookEvent
from tests.support.story import SeededStory, deliver, seed_attendee_story
from tests.support.webhooks import encode, payload

pytestmark = pytest.mark.django_db

SEARCH = "/admin/registrations/registration/?q="
# Tables that grow with traffic: a sequential scan of one of them is what a million rows punish.
LARGE_TABLES = (
    "webhooks_webhookevent",
    "registrations_registration",
    "registrations_registrationevent",
    "registrations_failedapply",
    "notifications_notification",
    "notifications_notificationattempt",
    "notifications_notificationreplay",
)


@pytest.fixture
def story(portal: Portal) -> SeededStory:
    seed_attendee_story(portal, registration_id="R-OTHER", email="someone@example.org", first_name="Ada")
    return seed_attendee_story(portal)


def _plans_of(client: Client, url: str) -> list[tuple[str, str]]:
    """(SQL, plan) of every SELECT on a large table that one GET of `url` sends."""
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200, url
    selects = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith("SELECT") and any(t in q["sql"] for t in LARGE_TABLES)
    ]
    assert selects, f"{url} read no large table"
    plans = []
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        for sql in selects:
            cursor.execute(f"EXPLAIN {sql}")
            plans.append((sql, "\n".join(row[0] for row in cursor.fetchall())))
    return plans


def _scans_of_large_tables(plans: list[tuple[str, str]]) -> list[str]:
    """The plans that read a large table whole: a sequential scan, or an index scan with no index
    condition (the planner walking the primary key backwards and filtering every row, which is what
    it does when one ORed search field has no index and sequential scans are off)."""
    whole = []
    for sql, plan in plans:
        lines = plan.splitlines()
        for number, line in enumerate(lines):
            scan = re.search(
                r"(Seq Scan|Index Scan(?: Backward)? using \S+|Index Only Scan(?: Backward)? using \S+)"
                r" on (\w+)",
                line,
            )
            if not scan or scan.group(2) not in LARGE_TABLES:
                continue
            details = []
            for detail in lines[number + 1 :]:
                if "->" in detail:
                    break
                details.append(detail)
            if scan.group(1) == "Seq Scan" or not any("Index Cond:" in detail for detail in details):
                whole.append(f"{sql}\n{plan}")
    return whole


def test_story_page_reads_every_large_table_through_an_index(staff: Client, story: SeededStory) -> None:
    plans = _plans_of(staff, f"/admin/registrations/registration/{story.registration.pk}/story/")
    assert not _scans_of_large_tables(plans), "\n\n".join(_scans_of_large_tables(plans))
    assert any("webhook_event_payload_reg_idx" in plan for _, plan in plans), "\n\n".join(p for _, p in plans)


def test_deliveries_outside_the_event_log_are_found_through_the_payload_index(story: SeededStory) -> None:
    # Given the rejected delivery (no event log row names it) the story finds by the payload ...
    rejected = WebhookEvent.objects.get(delivery_id=story.rejected_delivery_id)
    assert rejected in webhook_events_of_registration(story.registration)
    # ... the query Django builds for `payload__data__registration_id=` is the index's expression.
    queryset = WebhookEvent.objects.filter(
        portal_id=story.registration.portal_id, payload__data__registration_id=story.registration.external_id
    )
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = queryset.order_by().explain()
    assert "webhook_event_payload_reg_idx" in plan, plan
    assert "Index Cond" in plan and "registration_id" in plan.split("Index Cond", 1)[1], plan


@pytest.mark.parametrize("term", ["grace@exa", "Grace", "msg_R-2001_created", "msg_R-2001_broken", "notification-id"])
def test_registration_searches_read_through_indexes(rf, story: SeededStory, term: str) -> None:
    # Given the registration search exactly as the admin builds it (its search fields ORed, and the
    # registrations a notification or delivery id names), without the list's order: on a handful of
    # rows the planner would rather walk the primary key backwards than combine the indexes.
    term = str(story.dead_email.id) if term == "notification-id" else term
    registration_admin = admin.site._registry[Registration]
    with CaptureQueriesContext(connection) as lookups:
        queryset, _ = registration_admin.get_search_results(rf.get("/"), Registration.objects.all(), term)
    assert story.registration in queryset
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plans = [(str(queryset.order_by().query), queryset.order_by().explain())]
        for sql in [q["sql"] for q in lookups.captured_queries if q["sql"].startswith("SELECT")]:
            cursor.execute(f"EXPLAIN {sql}")  # the id lookups before it (delivery id, notification id)
            plans.append((sql, "\n".join(row[0] for row in cursor.fetchall())))
    assert not _scans_of_large_tables(plans), "\n\n".join(_scans_of_large_tables(plans))
    assert "BitmapOr" in plans[0][1], plans[0][1]


def test_story_page_queries_do_not_grow_with_its_rows(staff: Client, portal: Portal) -> None:
    # Given two attendees, the second with a second delivery rejected and one more attempt ...
    first = seed_attendee_story(portal, registration_id="R-1", email="one@example.org")
    second = seed_attendee_story(portal, registration_id="R-2", email="two@example.org")
    deliver(portal, encode(payload("R-2", event_type="registration.updated", email="still-broken")), "msg_R-2_again")
    attempt = second.dead_email.attempt_log.get()
    attempt.pk, attempt.number = None, 2
    attempt.save()

    def count(seeded: SeededStory) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert staff.get(f"/admin/registrations/registration/{seeded.registration.pk}/story/").status_code == 200
        return len(queries.captured_queries)

    count(first)  # the first request of a session reads a few rows once (session, user, content types)
    # ... the page sends as many queries for either: a few per registration, none per row.
    assert count(first) == count(second)
