"""The attendee's story: one search (e-mail, name, registration, delivery or notification id) leads to
one page with every delivery, the event log, each notification's attempts and replays, in time order."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from apps.notifications.services import notification_replay
from apps.registrations.models import FailedApply
from apps.webhooks.models import Portal, WebhookEvent
from tests.support.story import HOSTILE_NAME, SeededStory, seed_attendee_story

pytestmark = pytest.mark.django_db

SEARCH = "/admin/registrations/registration/?q="


@pytest.fixture
def story(portal: Portal) -> SeededStory:
    seed_attendee_story(portal, registration_id="R-OTHER", email="someone@example.org", first_name="Ada")
    return seed_attendee_story(portal)


def story_url(story: SeededStory) -> str:
    return f"/admin/registrations/registration/{story.registration.pk}/story/"


@pytest.mark.parametrize(
    "term",
    [
        "grace@example.org",
        "Grace Lovelace",
        "R-2001",
        "msg_R-2001_created",
        "msg_R-2001_broken",
        "dead-notification-id",
    ],
)
def test_one_search_finds_the_registration_and_links_its_story(staff: Client, story: SeededStory, term: str) -> None:
    term = str(story.dead_email.id) if term == "dead-notification-id" else term
    page = staff.get(SEARCH + term).content.decode()
    assert story_url(story) in page
    assert "/registration/" in page and page.count('/story/"') == 1, "only this registration matches"


def test_the_story_tells_everything_in_time_order(staff: Client, story: SeededStory) -> None:
    notification_replay(
        notification_id=story.dead_email.id,
        reason="mailbox fixed by attendee",
        user=User.objects.get(username="support"),
    )
    page = staff.get(story_url(story)).content.decode()

    timeline = page[page.index('id="story-timeline"') :]
    sources = re.findall(r'<span class="source">(\w+)</span>', timeline)
    assert sources.count("delivery") == 2 and "event" in sources and "attempt" in sources
    assert sources.index("attempt") < sources.index("replay"), sources
    assert "rejected" in timeline and "Enter a valid email address" in timeline  # the field errors
    assert "550 5.1.1 mailbox unavailable" in timeline and "137 ms" in timeline and "smtp" in timeline
    assert "mailbox fixed by attendee" in timeline and "replayed by support" in timeline
    # The raw body is shown escaped, never as markup.
    assert HOSTILE_NAME not in page and "&lt;script&gt;" in page
    # Times in the event's zone and in UTC; error codes link to the catalogue's "what to do".
    assert "Europe/Berlin" in page and re.search(r"\d\d:\d\d:\d\d CET", timeline)
    assert '/admin/error-codes/#smtp_permanent"' in page and '/admin/error-codes/#invalid_payload"' in page
    catalogue = staff.get("/admin/error-codes/").content.decode()
    assert 'id="smtp_permanent"' in catalogue and "Check the recipient address" in catalogue


def test_a_failed_apply_is_part_of_the_story(staff: Client, story: SeededStory) -> None:
    event = WebhookEvent.objects.get(delivery_id=story.accepted_delivery_id)
    FailedApply.objects.create(
        webhook_event=event,
        event_id=event.id,
        error_code="actor_failed",
        error_message="boom in apply",
        attempts=3,
        first_failed_at=timezone.now(),
        last_failed_at=timezone.now(),
    )
    timeline = staff.get(story_url(story)).content.decode().split('id="story-timeline"')[1]
    assert '<span class="source">failed_apply</span>' in timeline and "boom in apply" in timeline
    assert '/admin/error-codes/#actor_failed"' in timeline


def test_story_is_linked_from_the_list_and_the_change_page(staff: Client, story: SeededStory) -> None:
    assert story_url(story) in staff.get("/admin/registrations/registration/").content.decode()
    change = staff.get(f"/admin/registrations/registration/{story.registration.pk}/change/").content.decode()
    assert story_url(story) in change


def test_story_needs_a_login(client: Client, story: SeededStory) -> None:
    response = client.get(story_url(story))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
