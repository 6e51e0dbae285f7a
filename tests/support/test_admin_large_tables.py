"""The admin lists stay fast at a million rows (eventplatform/admin.py LargeTableAdmin): searches an
index answers, a capped count, filters without DISTINCT. Speed itself is bench/support_pages.py's."""

from __future__ import annotations

import re
import uuid

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.notifications import channels, classification
from apps.notifications.admin import NotificationAdmin
from apps.notifications.models import Notification
from apps.registrations.models import Registration
from apps.webhooks.models import Portal
from eventplatform.admin import CappedCountPaginator
from eventplatform.errors import CATALOGUE
from tests.notifications.factories import NotificationFactory
from tests.registrations.factories import RegistrationFactory
from tests.webhooks.factories import WebhookEventFactory

pytestmark = pytest.mark.django_db

NOTIFICATIONS = "/admin/notifications/notification/"


@pytest.fixture
def notifications(portal: Portal) -> list[Notification]:
    rows = []
    for number in range(5):
        registration = RegistrationFactory(
            portal=portal,
            external_id=f"R-{number}",
            email=f"attendee{number}@example.org",
            last_name=f"Lovelace{number}",
        )
        rows.append(
            NotificationFactory(
                registration=registration,
                kind="confirmation",
                channel="email",
                recipient=registration.email,
                context={},
                status="dead" if number < 2 else "sent",
                correlation_id=uuid.uuid4().hex,
                last_error_code="smtp_permanent" if number < 2 else "",
            )
        )
    return rows


def _listed(client: Client, url: str) -> set[uuid.UUID]:
    response = client.get(url)
    assert response.status_code == 200, url
    return {row.pk for row in response.context["cl"].result_list}


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("attendee3@exa", [3]),  # a partial e-mail
        ("ATTENDEE1", [1]),  # case does not matter
        ("R-2", [2]),  # the portal's registration id, exactly
        ("R-", []),  # ... not a part of it
        ("nobody@example.org", []),
    ],
)
def test_search_finds_by_partial_email_and_exact_registration_id(
    staff: Client, notifications: list[Notification], term: str, expected: list[int]
) -> None:
    assert _listed(staff, f"{NOTIFICATIONS}?q={term}") == {notifications[i].pk for i in expected}


def test_search_by_notification_id_and_correlation_id(staff: Client, notifications: list[Notification]) -> None:
    target = notifications[4]
    assert _listed(staff, f"{NOTIFICATIONS}?q={target.pk}") == {target.pk}
    assert _listed(staff, f"{NOTIFICATIONS}?q={target.correlation_id}") == {target.pk}


def test_search_for_a_term_that_fits_no_field_lists_nothing(staff: Client, portal: Portal) -> None:
    # An id search on a UUID column with a non-UUID term must not fail (Django's default casts).
    assert _listed(staff, "/admin/webhooks/webhookevent/?q=not-a-uuid") == set()


def test_webhook_events_are_found_by_delivery_id(staff: Client, portal: Portal) -> None:
    event = WebhookEventFactory(
        portal=portal,
        delivery_id="msg_abc",
        type="registration.created",
        status="accepted",
        raw_body=b"{}",
        payload={},
        received_at="2026-12-01T08:00Z",
    )
    assert _listed(staff, "/admin/webhooks/webhookevent/?q=msg_abc") == {event.pk}
    assert _listed(staff, "/admin/webhooks/webhookevent/?q=msg_") == set()


def test_registrations_are_found_by_partial_email_or_last_name(
    staff: Client, notifications: list[Notification]
) -> None:
    registrations = "/admin/registrations/registration/"
    assert _listed(staff, f"{registrations}?q=attendee2@") == {notifications[2].registration_id}
    assert _listed(staff, f"{registrations}?q=lovelace4") == {notifications[4].registration_id}


def test_lists_never_count_the_whole_table(
    staff: Client, notifications: list[Notification], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(CappedCountPaginator, "cap", 3)
    with CaptureQueriesContext(connection) as queries:
        response = staff.get(NOTIFICATIONS)
    assert response.context["cl"].result_count == 4  # the cap + 1: "more than 3"
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT 4" in sql for sql in counts), counts
    # Below the cap the count is exact.
    assert staff.get(f"{NOTIFICATIONS}?status__exact=dead").context["cl"].result_count == 2


@pytest.mark.parametrize(
    "url",
    [
        NOTIFICATIONS,
        "/admin/notifications/notificationattempt/",
        "/admin/webhooks/webhookevent/",
        "/admin/registrations/registration/",
        "/admin/outbox/outboxmessage/",
    ],
)
def test_filters_take_their_choices_from_the_code_not_from_distinct(
    staff: Client, notifications: list[Notification], url: str
) -> None:
    with CaptureQueriesContext(connection) as queries:
        assert staff.get(url).status_code == 200
    assert not [
        q["sql"]
        for q in queries.captured_queries
        if re.search(r"\bDISTINCT\b", q["sql"], re.I) and "django_" not in q["sql"] and "auth_" not in q["sql"]
    ]


def test_error_code_filter_lists_what_notifications_can_carry_and_filters(
    staff: Client, notifications: list[Notification]
) -> None:
    html = staff.get(NOTIFICATIONS).content.decode()
    listed = set(re.findall(r"last_error_code__exact=([\w.]+)", html))
    # Every row of the classification and the send path's own codes; no webhook-only code.
    rule_codes = {rule.error_code for rule in (*channels.rules(), classification.UNCLASSIFIED)}
    assert rule_codes | {"retries_exhausted", "circuit_open", "invalid_recipient"} <= listed
    assert not listed & {
        "invalid_signature",
        "timestamp_out_of_tolerance",
        "unknown_portal",
        "payload_too_large",
        "malformed_json",
        "rate_limited",
        "library_warning",
        "embedded_default",
    }
    assert listed <= set(CATALOGUE)
    assert _listed(staff, f"{NOTIFICATIONS}?last_error_code__exact=smtp_permanent") == {
        notifications[0].pk,
        notifications[1].pk,
    }


def test_partial_email_search_uses_the_trigram_index(notifications: list[Notification], rf) -> None:
    # Given the search exactly as the admin builds it; the planner told to avoid a sequential scan
    # (on five rows it would prefer one), so the plan shows whether the index matches the SQL.
    admin = NotificationAdmin(Notification, None)
    queryset, _ = admin.get_search_results(rf.get("/"), Notification.objects.all(), "attendee3@exa")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = queryset.order_by().explain()
    assert "notif_recipient_trgm_idx" in plan, plan


def test_fixed_filters_offer_roles_and_declared_actors(staff: Client) -> None:
    assert "role__exact=speaker" in staff.get("/admin/registrations/registration/").content.decode()
    assert "actor_name__exact=notification_send" in staff.get("/admin/outbox/outboxmessage/").content.decode()


def test_search_follows_a_reverse_foreign_key(notifications: list[Notification], rf) -> None:
    # Given a registration admin searching by its notifications' ids (as a story search may).
    from apps.registrations.admin import RegistrationAdmin

    admin = RegistrationAdmin(Registration, None)
    admin.search_fields = ("=external_id", "=notifications__id")
    target = notifications[3]
    queryset, duplicates = admin.get_search_results(rf.get("/"), Registration.objects.all(), str(target.pk))
    assert list(queryset) == [target.registration] and duplicates is False
