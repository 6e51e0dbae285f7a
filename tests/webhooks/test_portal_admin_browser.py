"""Onboarding a portal in a real browser (issue 21), as the least-privileged user who does it: a
staff user with the portal permissions and "rotate portal secret", nothing else. "Add portal"
answers with the first secret, once; the portal's page then offers "Rotate secret"; a portal
added bare (by a script) offers "New secret"."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Permission, User

from apps.webhooks.models import Portal
from tests.support.processes import process_env, start_web
from tests.support.test_admin_browser import browser, logged_in_page  # noqa: F401 (a fixture, and its helper)
from tests.webhooks.factories import PortalFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PORTAL_PERMISSIONS = ("view_portal", "add_portal", "change_portal", "rotate_portal_secret")


@pytest.fixture
def base_url(db) -> Iterator[str]:
    web, url = start_web(process_env())
    try:
        yield url
    finally:
        web.stop()


def test_onboarding_a_portal_shows_its_first_secret_once_then_offers_rotation(
    browser: object,  # noqa: F811
    base_url: str,
) -> None:
    user = User.objects.create_user("onboarder", "onboarder@example.org", "correct horse", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=PORTAL_PERMISSIONS))
    page = logged_in_page(browser, base_url, "onboarder")
    # When they add a portal without typing a secret
    page.goto("/admin/webhooks/portal/add/")
    page.fill("#id_slug", "tito")
    page.fill("#id_name", "Tito")
    page.click("input[name=_save]")
    page.wait_for_load_state()
    # Then the page shows its first secret
    shown = page.locator("code.new-secret")
    assert shown.count() == 1, page.content()[:3000]
    secret = shown.inner_text()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/=]{40,}", secret)
    assert "its first secret" in page.content()
    portal = Portal.objects.get(slug="tito")
    assert list(portal.secrets.values_list("secret", flat=True)) == [secret]
    # and on the portal's page it is masked, and the button says "Rotate secret"
    page.click("text=tito")
    page.wait_for_url(f"**/admin/webhooks/portal/{portal.pk}/change/")
    assert secret not in page.content()
    assert page.get_by_role("button", name="Rotate secret").count() == 1
    # A portal created bare offers "New secret", which shows one
    bare = PortalFactory(slug="bare", name="Bare")
    page.goto(f"/admin/webhooks/portal/{bare.pk}/change/")
    page.get_by_role("button", name="New secret").click()
    page.wait_for_load_state()
    assert page.locator("code.new-secret").inner_text() == bare.secrets.get().secret
