"""The wording pages in a real browser (Playwright driving Debian's Chromium) against a real gunicorn
on this run's test database, as a staff user with ONLY the template permissions: edit, preview, a
broken template refused with its line, "send me a test" (arrives at aiosmtpd), save, revert.

`EP_SCREENSHOT_DIR=docs/img` also writes the screenshots used in docs/organisers.md ("Wording").
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import connections
from django.test import Client
from playwright import sync_api

from apps.notifications.message_templates import message_template_add_locale
from apps.notifications.models import MessageTemplate
from tests.support.processes import process_env, start_web
from tests.support.smtp import SmtpServer

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
TEMPLATES = "/admin/notifications/messagetemplate/"


@pytest.fixture
def base_url(smtp_server: SmtpServer) -> Iterator[str]:
    web, url = start_web(process_env(EMAIL_URL=smtp_server.url))
    try:
        yield url
    finally:
        web.stop()


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[sync_api.Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: `make test` installs it (deploy/install-tools.sh)")
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls between page steps
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
            connections.close_all()


def editor_page(browser: sync_api.Browser, base_url: str) -> sync_api.Page:
    """Logged in as a staff user with the template permissions only, by a session made on the server
    side (force_login): the login form is throttled by django-axes and is not what is tested here."""
    editor = User.objects.create_user("wording", "wording@example.org", "unused", is_staff=True)
    editor.user_permissions.add(
        *Permission.objects.filter(
            codename__in=("view_messagetemplate", "change_messagetemplate", "add_messagetemplate")
        )
    )
    client = Client()
    client.force_login(editor)
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    context.add_cookies(
        [
            {
                "name": settings.SESSION_COOKIE_NAME,
                "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                "url": base_url,
            }
        ]
    )
    if os.environ.get("EP_SCREENSHOT_DIR"):
        context.add_init_script("localStorage.setItem('django.admin.navSidebarIsOpen', 'false')")
    return context.new_page()


def screenshot(page: sync_api.Page, tmp_path: Path, name: str, part: str | None = None) -> None:
    """The viewport, or only the element `part` (small PNGs for the docs)."""
    path = tmp_path / name
    if part:
        page.locator(part).screenshot(path=str(path))
    else:
        page.screenshot(path=str(path))
    if target := os.environ.get("EP_SCREENSHOT_DIR"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)


def test_an_editor_edits_previews_is_refused_sends_a_test_saves_and_reverts(
    browser: sync_api.Browser, base_url: str, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    message_template_add_locale(locale="en", portal_id=None, user=None)
    template = MessageTemplate.objects.get(kind="confirmation", channel="email", locale="en", role="attendee")
    page = editor_page(browser, base_url)

    # The list shows what can be edited; the editor opens the confirmation e-mail.
    page.goto(f"{TEMPLATES}?kind__exact=confirmation&channel__exact=email")
    assert page.locator("#add-locale-link").count() == 1
    page.click(f'#result_list a[href*="/{template.id}/change/"]')
    assert "your registration is confirmed for" in page.inner_text("#preview-text")
    assert page.get_attribute("#preview-html", "sandbox") == ""

    # Edit a sentence and preview it: text and HTML, nothing saved yet.
    page.fill("#id_subject", "Welcome aboard, {{ first_name }}: {{ event_name }}")
    page.fill("#id_text", "Hello {{ first_name }},\n\nwe are glad you come to {{ event_name }}.")
    page.fill("#id_html", "<p>Hello {{ first_name }},</p>\n<p>we are <em>glad</em> you come to {{ event_name }}.</p>")
    page.click("#preview-button")
    assert page.inner_text("#preview-subject") == "Welcome aboard, Ada: PyCon Sample"
    assert "we are glad you come to PyCon Sample." in page.inner_text("#preview-text")
    frame = page.frame_locator("#preview-html")
    assert frame.locator("em").inner_text() == "glad"
    screenshot(page, tmp_path, "wording-preview.png", "#preview")
    assert template.versions.count() == 1

    # A broken template is refused at save, with the part and the line that fails.
    page.fill("#id_text", 'Hello {{ first_name }},\n{% include "notifications/en/_event.txt" %}')
    page.click("#save-button")
    assert "Line 2: the tag {% include %} is not allowed" in page.inner_text(".errorlist")
    page.fill("#id_text", "Hello {{ first_name }},\n\n{{ ticket_price }}")
    page.click("#save-button")
    assert "Line 3: unknown variable 'ticket_price'" in page.inner_text(".errorlist")
    screenshot(page, tmp_path, "wording-refused.png")
    assert template.versions.count() == 1

    # Send me a test: it arrives at the mail server, to the editor's own address.
    page.fill("#id_text", "Hello {{ first_name }},\n\nwe are glad you come to {{ event_name }}.")
    page.click("#test-button")
    assert "Test message sent to wording@example.org" in page.inner_text(".messagelist")
    (test_message,) = smtp_server.messages
    assert (test_message["To"], test_message["Subject"]) == (
        "wording@example.org",
        "[Test] Welcome aboard, Ada: PyCon Sample",
    )

    # Save: version 2, with who and the diff against version 1.
    page.click("#save-button")
    assert "Version 2 saved" in page.inner_text(".messagelist")
    assert "saved by wording" in page.inner_text("#wording-active")
    assert "+we are glad you come to {{ event_name }}." in page.inner_text("#version-2 .diff")
    screenshot(page, tmp_path, "wording-history.png", "#history")

    # Revert to version 1: a new version 3 copying it.
    page.click("#revert-1")
    assert "Version 3 saved: a copy of version 1" in page.inner_text(".messagelist")
    assert "your registration is confirmed for" in page.inner_text("#preview-text")
    assert list(template.versions.order_by("number").values_list("number", "note")) == [
        (1, "shipped default"),
        (2, ""),
        (3, "revert to version 1"),
    ]
    assert len(smtp_server.messages) == 1  # only the test send went out
