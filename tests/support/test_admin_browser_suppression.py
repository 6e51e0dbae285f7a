"""Lifting a suppression in a real browser (Playwright driving Debian's Chromium, against gunicorn on
this run's test database), as a staff user holding only view permissions and the two decisions'
permissions (lift, replay): the replay of the bounced e-mail is refused, saying plainly why; after the
lift (with a reason, audited) the same replay is queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User

from apps.notifications.models import Notification, NotificationReplay, Suppression
from apps.webhooks.models import Portal
from tests.notifications.factories import NotificationFactory, record_permanent_bounce
from tests.registrations.factories import RegistrationFactory
from tests.support.processes import process_env, start_web
from tests.support.test_admin_browser import (  # noqa: F401 - the fixture
    browser,
    logged_in_page,
    screenshot,
    static_failures,
)

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PERMISSIONS = (
    "view_suppression",
    "lift_suppression",
    "view_notification",
    "view_notificationattempt",
    "view_notificationreplay",
    "view_registration",
    "replay_notification",
)


@pytest.fixture
def bounced(portal: Portal) -> Notification:
    registration = RegistrationFactory(portal=portal, email="grace@example.org")
    notification = NotificationFactory(registration=registration, status="sent", attempts=1)
    record_permanent_bounce(
        notification,
        diagnostic="smtp; 550 5.1.1 <grace@example.org>: Recipient address rejected",
        details={"Action": "failed", "Status": "5.1.1"},
    )
    return notification


@pytest.fixture
def base_url(bounced: Notification) -> Iterator[str]:
    web, url = start_web(process_env())
    try:
        yield url
    finally:
        web.stop()


def test_lifting_a_suppression_with_view_and_lift_permissions_then_replaying(
    request: pytest.FixtureRequest, base_url: str, bounced: Notification, tmp_path: Path
) -> None:
    chromium = request.getfixturevalue("browser")  # Chromium under Playwright (tests/support/test_admin_browser.py)
    user = User.objects.create_user("lifter", "lifter@example.org", "correct horse", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=PERMISSIONS))
    page = logged_in_page(chromium, base_url, "lifter")
    failures = static_failures(page)

    # The replay of the bounced e-mail is refused while its address is suppressed, and says why
    page.goto(f"/admin/notifications/notification/{bounced.id}/change/")
    assert page.locator("text=smtp; 550 5.1.1").count() >= 1, "the delivery report is on the page"
    page.click("#replay-link")
    page.fill("#replay-form textarea[name=reason]", "Grace says her mailbox works again, ticket 4711")
    page.click("#replay-confirm")
    page.wait_for_load_state()
    warning = page.locator("ul.messagelist li.warning").inner_text()
    assert "address_suppressed" in warning and "It will not send until the suppression is lifted" in warning
    assert NotificationReplay.objects.count() == 0
    screenshot(page, tmp_path, "replay-refused-suppressed.png", publish=False)

    # Lift it: find the address, select it, the lift action, a reason
    page.goto("/admin/notifications/suppression/")
    page.fill("#searchbar", "Grace@Example.org")
    page.press("#searchbar", "Enter")
    page.wait_for_load_state()
    page.check("input.action-select")
    page.select_option("select[name=action]", "lift_suppressions")
    page.click("button[name=index]")
    page.wait_for_load_state()
    assert "grace@example.org" in page.locator("#lift-summary").inner_text()
    page.fill("#lift-form textarea[name=reason]", "mailbox restored, confirmed by phone (ticket 4711)")
    page.click("#lift-confirm")
    page.wait_for_load_state()
    assert "Lifted 1 suppression(s)" in page.locator("ul.messagelist li.success").inner_text()
    suppression = Suppression.objects.get()
    assert (suppression.lifted_by, suppression.lift_reason) == (
        user,
        "mailbox restored, confirmed by phone (ticket 4711)",
    )

    # Now the replay is queued
    page.goto(f"/admin/notifications/notification/{bounced.id}/change/")
    page.click("#replay-link")
    page.fill("#replay-form textarea[name=reason]", "suppression lifted, ticket 4711")
    page.click("#replay-confirm")
    page.wait_for_load_state()
    assert "Queued 1 notification(s)" in page.locator("ul.messagelist li.success").inner_text()
    bounced.refresh_from_db()
    assert bounced.status == "pending"
    assert failures == []
