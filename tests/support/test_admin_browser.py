"""Support staff in a real browser (Playwright driving Debian's Chromium) against a real gunicorn on
this run's test database: without the replay permission nothing can be replayed; with it, a support
user finds an attendee by e-mail, reads the story, replays the dead e-mail with a reason and sees
the audit entry.

`EP_SCREENSHOT_DIR=docs/img` also writes the screenshots used in docs/support.md. The admin's CSS
comes from gunicorn itself (WhiteNoise): every page checks its stylesheets were served.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connections
from playwright import sync_api

from apps.notifications.models import Notification, NotificationReplay
from apps.webhooks.models import Portal
from tests.support.processes import process_env, start_web
from tests.support.story import SeededStory, seed_attendee_story

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
VIEW_PERMISSIONS = (
    "view_notification",
    "view_notificationattempt",
    "view_notificationreplay",
    "view_registration",
    "view_webhookevent",
)
NOTIFICATIONS = "/admin/notifications/notification/"


def support_user(username: str, *extra_permissions: str) -> User:
    # gunicorn runs the test settings too (tests/support/processes.py), so their fast hasher checks it.
    user = User.objects.create_user(username, f"{username}@example.org", "correct horse", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=VIEW_PERMISSIONS + extra_permissions))
    return user


@pytest.fixture
def story(portal: Portal) -> SeededStory:
    return seed_attendee_story(portal)


@pytest.fixture
def base_url(story: SeededStory) -> Iterator[str]:
    web, url = start_web(process_env())
    try:
        yield url
    finally:
        web.stop()


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: `make test` installs it (deploy/install-tools.sh)")
    # Playwright's sync API runs an event loop in this thread; the ORM calls between page steps are
    # still plain synchronous calls, so Django's async-safety guard is told so.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
            # ORM calls made while Playwright's loop runs get their own (context-local) connection;
            # close it here, or the test database cannot be dropped at the end of the run.
            connections.close_all()


def logged_in_page(browser: object, base_url: str, username: str) -> object:
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    if os.environ.get("EP_SCREENSHOT_DIR"):
        # The admin's navigation sidebar folded away: the pictures show the page itself.
        context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    page = context.new_page()
    page.goto("/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "correct horse")
    page.click("input[type=submit]")
    page.wait_for_load_state()
    assert page.locator("#user-tools").count() == 1, f"login failed:\n{page.content()[:3000]}"
    return page


def static_failures(page: object) -> list[tuple[str, int]]:
    """From now on, every stylesheet or script the page loads that the server did not answer 200."""
    failures: list[tuple[str, int]] = []
    page.on(
        "response",
        lambda response: "/static/" in response.url
        and response.status != 200
        and failures.append((response.url, response.status)),
    )
    return failures


def screenshot(page: object, tmp_path: Path, name: str, *, publish: bool = True) -> None:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    if publish and (target := os.environ.get("EP_SCREENSHOT_DIR")):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)


def test_without_the_replay_permission_nothing_can_be_replayed(
    browser: object, base_url: str, story: SeededStory
) -> None:
    support_user("viewer")
    page = logged_in_page(browser, base_url, "viewer")
    dead = story.dead_email

    page.goto(f"{NOTIFICATIONS}?status__exact=dead")
    assert page.locator(f"text={dead.id}").count() >= 1, "the viewer sees the dead notification"
    assert page.locator("select[name=action] option[value=replay_notifications]").count() == 0
    assert page.locator("#replay-matching-link").count() == 0
    page.goto(f"{NOTIFICATIONS}{dead.id}/change/")
    assert page.locator("#replay-link").count() == 0 and page.locator("#story-link").count() == 1
    assert page.goto(f"{NOTIFICATIONS}replay/?notification={dead.id}").status == 403

    # A forged POST (the form the viewer is not shown), with a valid CSRF token: refused all the same.
    page.goto(NOTIFICATIONS)
    token = page.locator("input[name=csrfmiddlewaretoken]").first.get_attribute("value")
    forged = {"csrfmiddlewaretoken": token, "confirm": "yes", "reason": "forged"}
    referer = {"Referer": f"{base_url}{NOTIFICATIONS}"}
    refused = page.request.post(f"{NOTIFICATIONS}replay/?notification={dead.id}", form=forged, headers=referer)
    assert refused.status == 403
    page.request.post(
        NOTIFICATIONS,
        headers=referer,
        form={**forged, "action": "replay_notifications", "_selected_action": str(dead.id)},
    )
    dead.refresh_from_db()
    assert (dead.status, NotificationReplay.objects.count()) == ("dead", 0)


def test_support_finds_the_attendee_reads_the_story_and_replays(
    browser: object, base_url: str, story: SeededStory, tmp_path: Path
) -> None:
    support_user("replayer", "replay_notification")
    started = time.monotonic()
    page = logged_in_page(browser, base_url, "replayer")
    missing_static = static_failures(page)

    # Given an attendee who says they got nothing: search by their e-mail ...
    page.goto("/admin/registrations/registration/")
    page.fill("#searchbar", "grace@example.org")
    page.press("#searchbar", "Enter")
    page.wait_for_url("**q=grace*")
    page.click('#result_list a[href$="/story/"]')
    page.wait_for_url(f"**/registration/{story.registration.pk}/story/")
    # ... read what happened: the rejected delivery, the mail server's refusal ...
    timeline = page.locator("#story-timeline")
    assert "rejected" in timeline.inner_text() and "550 5.1.1 mailbox unavailable" in timeline.inner_text()
    assert page.locator("#story-timeline a.error-code", has_text="smtp_permanent").count() >= 1
    screenshot(page, tmp_path, "story-before-replay.png", publish=False)

    # ... replay the dead e-mail, which asks for a reason and says what will be sent.
    page.click("#story-notifications tr.dead a.replay-link")
    assert page.inner_text("#replay-count") == "1"
    assert "confirmation" in page.inner_text("#replay-summary")
    screenshot(page, tmp_path, "replay-confirmation.png")
    page.click("#replay-confirm")  # no reason yet: the browser's `required` or the form refuses
    assert page.locator("#replay-form").count() == 1
    page.fill("textarea[name=reason]", "Attendee fixed their mailbox (ticket 4711)")
    page.click("#replay-confirm")
    # Then it returns to the story it came from, showing the new state without a reload
    page.wait_for_url(f"**/registration/{story.registration.pk}/story/")
    assert "Queued 1 notification(s)" in page.inner_text(".messagelist")
    assert "replayed by replayer" in page.inner_text("#story-timeline")
    assert page.locator("#story-notifications tr.pending", has_text="confirmation").count() == 1
    screenshot(page, tmp_path, "story.png")
    # And the notification's page shows the audit entry.
    page.click(f"#story-notifications a[href*='{story.dead_email.id}']")
    assert "Attendee fixed their mailbox (ticket 4711)" in page.inner_text("#content")
    assert "replayer" in page.inner_text("#content")
    print(f"browser walk-through took {time.monotonic() - started:.1f} s")
    assert missing_static == [], "the admin is styled: every stylesheet served by gunicorn"

    notification = Notification.objects.get(id=story.dead_email.id)
    audit = notification.replays.get()
    assert notification.status == "pending"
    assert (audit.user.username, audit.reason, audit.previous_status) == (
        "replayer",
        "Attendee fixed their mailbox (ticket 4711)",
        "dead",
    )


def test_the_status_page_renders_with_its_chart_and_the_admin_is_styled(
    browser: object, base_url: str, story: SeededStory, tmp_path: Path
) -> None:
    support_user("watcher")  # staff with view permissions only: the status page is for every support user
    page = logged_in_page(browser, base_url, "watcher")
    missing_static = static_failures(page)
    assert page.goto("/admin/status/").status == 200
    for section in ("outbox", "queues", "breakers", "scheduler", "chart"):
        assert page.locator(f"#status-{section}").count() == 1, section
    failed_bars = page.locator("#status-chart svg rect.failed")
    assert failed_bars.count() == 288  # 24 h in 5-minute buckets
    counts = [int(value) for value in failed_bars.evaluate_all("bars => bars.map(bar => bar.dataset.count)")]
    assert sum(counts) >= 1, "the seeded refusal shows as a failed attempt"
    # Styled: the admin's stylesheet applied (the header has the admin's colour, not the browser default).
    header_colour = page.evaluate("getComputedStyle(document.querySelector('#header')).backgroundColor")
    assert header_colour not in ("rgba(0, 0, 0, 0)", "transparent")
    assert missing_static == []
    screenshot(page, tmp_path, "status.png")


def contrast(page: object, selector: str) -> float:
    """WCAG contrast ratio of an element's text against the background it is drawn on."""
    colours = page.evaluate(
        """selector => {
        const element = document.querySelector(selector);
        let background = element, colour = getComputedStyle(element).color, fill = 'rgba(0, 0, 0, 0)';
        while (background && (fill === 'rgba(0, 0, 0, 0)' || fill === 'transparent')) {
            fill = getComputedStyle(background).backgroundColor; background = background.parentElement;
        }
        return [colour, fill];
    }""",
        selector,
    )

    def luminance(css: str) -> float:
        red, green, blue = (int(part) / 255 for part in re.findall(r"\d+", css)[:3])
        linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (red, green, blue)]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(colours[0]), luminance(colours[1])), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def page_width(page: object) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def test_the_pipeline_status_link_on_the_admin_home_can_be_read(browser: object, base_url: str) -> None:
    support_user("watcher")  # view permissions only: the status page is for every support user
    page = logged_in_page(browser, base_url, "watcher")
    page.goto("/admin/")
    assert contrast(page, "#status-link h2 a") >= 3, "the link stands out from its header (WCAG AA, large text)"
    page.click("#status-link h2 a")
    page.wait_for_url("**/admin/status/")


def test_replaying_a_sent_notification_unticked_is_refused_saying_what_to_tick(
    browser: object, base_url: str, story: SeededStory
) -> None:
    sent = story.dead_email
    Notification.objects.filter(id=sent.id).update(status="sent", last_error_code="", last_error_message="")
    support_user("replayer", "replay_notification")
    page = logged_in_page(browser, base_url, "replayer")
    story_url = f"/admin/registrations/registration/{story.registration.pk}/story/"
    page.goto(story_url)
    page.click("#story-notifications tr.sent a.replay-link")
    page.fill("textarea[name=reason]", "Attendee cannot find it (ticket 4712)")
    page.click("#replay-confirm")  # "also send again" left unticked
    refusal = page.inner_text("#include-sent-row")
    assert "Nothing was replayed" in refusal and "Also send again the ones already sent" in refusal
    assert page.locator(".messagelist").count() == 0, 'no green "Queued 0"'
    sent.refresh_from_db()
    assert (sent.status, sent.replays.count()) == ("sent", 0)
    # Ticked, it is sent again, and the page returns to the story it came from
    page.check("input[name=include_sent]")
    page.click("#replay-confirm")
    page.wait_for_url(f"**{story_url}")
    assert "Queued 1 notification(s)" in page.inner_text(".messagelist")
    assert page.locator("#story-notifications tr.pending", has_text="confirmation").count() == 1
    sent.refresh_from_db()
    assert (sent.status, sent.replays.get().previous_status) == ("pending", "sent")


def test_the_registration_list_fits_1400_px_with_e_mail_story_link_and_event_times_labelled(
    browser: object, base_url: str, story: SeededStory
) -> None:
    support_user("viewer")  # view permissions only: reading is all this page is for
    page = logged_in_page(browser, base_url, "viewer")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto("/admin/registrations/registration/")
    assert page_width(page) <= 1400, page_width(page)
    assert "grace@example.org" in page.inner_text("#result_list")
    story_link = page.locator("#result_list a[href$='/story/']").first.bounding_box()
    assert story_link["x"] + story_link["width"] <= 1400, "support's way in is on screen"
    # Event times in the event's zone, labelled, as the e-mail says them (09:00 Europe/Berlin)
    assert "2026-12-03 09:00 (Europe/Berlin)" in page.inner_text("#result_list")
    page.goto(f"/admin/registrations/registration/{story.registration.pk}/change/")
    content = page.inner_text("#content")
    assert "2026-12-03 09:00 (Europe/Berlin)" in content
    assert "Dec. 3, 2026, 8 a.m." not in content, "no unlabelled UTC time beside it"


def test_rows_read_as_what_they_are(browser: object, base_url: str, story: SeededStory) -> None:
    support_user("viewer", "view_registrationevent")  # view permissions only
    page = logged_in_page(browser, base_url, "viewer")
    page.goto(f"/admin/registrations/registration/{story.registration.pk}/change/")
    content = page.inner_text("#content")
    assert "version 1: created" in content and "RegistrationEvent object" not in content
    page.goto(f"{NOTIFICATIONS}{story.dead_email.id}/change/")
    content = page.inner_text("#content")
    assert "attempt 1: permanent_error (smtp_permanent)" in content and "NotificationAttempt object" not in content
    page.goto(NOTIFICATIONS)
    listed = page.inner_text("#result_list")
    assert "R-2001" in listed and f"{story.registration.portal_id}:R-2001" not in listed


def test_the_error_code_filter_lists_only_codes_a_notification_can_have(
    browser: object, base_url: str, story: SeededStory
) -> None:
    support_user("viewer")
    page = logged_in_page(browser, base_url, "viewer")
    page.goto(NOTIFICATIONS)
    filters = page.inner_text("#changelist-filter")
    assert "smtp_permanent" in filters and "retries_exhausted" in filters
    assert "invalid_signature" not in filters and "unknown_portal" not in filters
    page.click("#changelist-filter a[href*='last_error_code__exact=smtp_permanent']")
    assert str(story.dead_email.id) in page.inner_text("#result_list")


def test_the_story_page_fits_and_a_past_row_says_what_was_true_then(
    browser: object, base_url: str, story: SeededStory
) -> None:
    support_user("viewer")
    page = logged_in_page(browser, base_url, "viewer")  # 1280 px, the navigation sidebar open
    page.goto(f"/admin/registrations/registration/{story.registration.pk}/story/")
    assert page_width(page) <= 1280, page_width(page)
    decided = page.locator("#story-timeline tr.notification", has_text="decided").first.inner_text()
    assert "now" not in decided.split() and "dead" not in decided, decided
