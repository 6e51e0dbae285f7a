"""Signing secrets in the admin (CONTRACT section 7, issue 9 part 3): masked after creation
everywhere (list, change page, inline, HTML source), rotated by a permission-guarded action that
shows the new secret once and keeps the old one active, hand-typed secrets validated like
create_portal's, and never a secret in the logs."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.test import Client

from apps.webhooks.models import Portal, PortalSecret, WebhookEvent
from apps.webhooks.selectors import portal_cache_clear
from apps.webhooks.signature import mask_secret
from tests.support.webhooks import SECRET, encode, payload, signed_headers
from tests.webhooks.factories import PortalFactory

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/webhooks/portal/"
VALID_TYPED = "whsec_" + "dHlwZWQtYnktaGFuZC0xNi1ieXRlcys="  # 23 key bytes
BAD_SECRETS = {
    "whsec_": "at least 16 key bytes",
    "nope": "whsec_",
    "whsec_!!!!not base64!!!!": "base64",
    "whsec_" + "c2hvcnQta2V5": "at least 16 key bytes",  # 9 bytes
    "whsec_ dHlwZWQtYnktaGFuZC0xNi1ieXRlcys=": "base64",
}


def change_url(portal: Portal) -> str:
    return f"/admin/webhooks/portal/{portal.pk}/change/"


@pytest.fixture
def admin_client(client: Client) -> Client:
    client.force_login(User.objects.create_superuser("boss", "boss@example.org", "pw"))
    return client


def staff_client(*codenames: str) -> Client:
    user = User.objects.create_user(f"staff-{'-'.join(codenames) or 'none'}", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client()
    client.force_login(user)
    return client


def deliver(secret: str, registration_id: str) -> int:
    portal_cache_clear()
    body = encode(payload(registration_id))
    headers = {k: v for k, v in signed_headers(body, secret=secret).items() if k != "content-type"}
    return Client().post("/webhooks/pretix/", data=body, content_type="application/json", headers=headers).status_code


def change_form_data(portal: Portal, new_secret: str | None = None) -> dict[str, str]:
    """The portal's change form as the browser posts it: the stored secrets' rows, one new row."""
    secrets = list(portal.secrets.order_by("pk"))
    data = {
        "slug": portal.slug,
        "name": portal.name,
        "active": "on",
        "rate_limit_per_minute": "",
        "secrets-TOTAL_FORMS": str(len(secrets) + (new_secret is not None)),
        "secrets-INITIAL_FORMS": str(len(secrets)),
        "secrets-MIN_NUM_FORMS": "0",
        "secrets-MAX_NUM_FORMS": "1000",
    }
    for index, stored in enumerate(secrets):
        data[f"secrets-{index}-id"] = str(stored.pk)
        data[f"secrets-{index}-portal"] = str(portal.pk)
        if stored.active:
            data[f"secrets-{index}-active"] = "on"
        data[f"secrets-{index}-secret"] = "whsec_tampered"  # a disabled field: ignored
    if new_secret is not None:
        index = len(secrets)
        data.update(
            {
                f"secrets-{index}-portal": str(portal.pk),
                f"secrets-{index}-secret": new_secret,
                f"secrets-{index}-active": "on",
            }
        )
    return data


def test_secrets_are_masked_in_the_list_and_change_page_and_its_source(admin_client: Client, portal: Portal) -> None:
    pages = (
        LIST_URL,
        change_url(portal),
        f"{LIST_URL}?q=pre",
        f"{LIST_URL}{portal.pk}/history/",
        f"{LIST_URL}{portal.pk}/delete/",
    )
    for url in pages:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert SECRET not in html and SECRET.removeprefix("whsec_") not in html
        if "delete" not in url and "history" not in url:
            assert mask_secret(SECRET) in html
    # the mask reveals a prefix and the last four characters, not the key
    assert mask_secret(SECRET) == "whsec_MfKQ…LaSw"


def test_posting_the_change_form_cannot_alter_a_stored_secret(admin_client: Client, portal: Portal) -> None:
    response = admin_client.post(change_url(portal), change_form_data(portal))
    assert response.status_code == 302, response.content.decode()[:2000]
    assert list(portal.secrets.values_list("secret", flat=True)) == [SECRET]


@pytest.mark.parametrize("typed", list(BAD_SECRETS))
def test_a_secret_typed_by_hand_is_validated_like_create_portal(
    admin_client: Client, portal: Portal, typed: str
) -> None:
    response = admin_client.post(change_url(portal), change_form_data(portal, new_secret=typed))
    assert response.status_code == 200, "the form is shown again with the error"
    assert BAD_SECRETS[typed] in response.content.decode()
    assert portal.secrets.count() == 1
    with pytest.raises(CommandError):  # the same rule, from the command line
        call_command("create_portal", "pretix", "--secret", typed)
    assert portal.secrets.count() == 1


def test_an_empty_new_row_adds_no_secret(admin_client: Client, portal: Portal) -> None:
    assert admin_client.post(change_url(portal), change_form_data(portal, new_secret="")).status_code == 302
    assert list(portal.secrets.values_list("secret", flat=True)) == [SECRET]


def test_a_valid_typed_secret_is_stored_then_masked_and_signs(admin_client: Client, portal: Portal) -> None:
    response = admin_client.post(change_url(portal), change_form_data(portal, new_secret=VALID_TYPED))
    assert response.status_code == 302
    assert VALID_TYPED in portal.secrets.filter(active=True).values_list("secret", flat=True)
    html = admin_client.get(change_url(portal)).content.decode()
    assert VALID_TYPED not in html and mask_secret(VALID_TYPED) in html
    assert deliver(VALID_TYPED, "R-TYPED") == 202


def test_rotate_shows_the_new_secret_once_and_keeps_the_old_one_active(
    admin_client: Client, portal: Portal, capsys: pytest.CaptureFixture[str]
) -> None:
    # When staff rotate the portal's secret
    response = admin_client.post(LIST_URL, {"action": "rotate_secret", "_selected_action": [str(portal.pk)]})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    html = response.content.decode()
    new_secret = re.search(r'<code class="new-secret">(whsec_[^<]+)</code>', html).group(1)
    assert html.count(new_secret) == 1
    # Then both the old and the new secret sign (rotation without downtime)
    assert set(portal.secrets.filter(active=True).values_list("secret", flat=True)) == {SECRET, new_secret}
    assert deliver(SECRET, "R-OLD") == 202 and deliver(new_secret, "R-NEW") == 202
    # and afterwards the new one is masked like any other
    for url in (LIST_URL, change_url(portal)):
        page = admin_client.get(url).content.decode()
        assert new_secret not in page and mask_secret(new_secret) in page
    # When staff deactivate the old one on the portal's page, only the new one signs
    data = change_form_data(portal)
    old_index = next(i for i, s in enumerate(portal.secrets.order_by("pk")) if s.secret == SECRET)
    del data[f"secrets-{old_index}-active"]
    assert admin_client.post(change_url(portal), data).status_code == 302
    assert deliver(SECRET, "R-OLD-2") == 401 and deliver(new_secret, "R-NEW-2") == 202
    assert WebhookEvent.objects.count() == 3
    # and no log line carried either secret
    output = capsys.readouterr()
    for secret in (SECRET, new_secret):
        assert secret.removeprefix("whsec_") not in output.out + output.err


def test_rotate_needs_its_permission(portal: Portal) -> None:
    viewer = staff_client("view_portal", "change_portal")
    page = viewer.get(LIST_URL).content.decode()
    assert "rotate_secret" not in page
    response = viewer.post(LIST_URL, {"action": "rotate_secret", "_selected_action": [str(portal.pk)]})
    assert "whsec_" not in response.content.decode().replace(mask_secret(SECRET), "")
    assert PortalSecret.objects.count() == 1

    rotator = staff_client("view_portal", "change_portal", "rotate_portal_secret")
    assert "rotate_secret" in rotator.get(LIST_URL).content.decode()
    response = rotator.post(LIST_URL, {"action": "rotate_secret", "_selected_action": [str(portal.pk)]})
    assert response.status_code == 200 and PortalSecret.objects.count() == 2


def test_rotating_several_portals_at_once(admin_client: Client, portal: Portal) -> None:
    other = PortalFactory(slug="eventbrite", name="Eventbrite")
    response = admin_client.post(
        LIST_URL, {"action": "rotate_secret", "_selected_action": [str(portal.pk), str(other.pk)]}
    )
    assert len(re.findall(r'class="new-secret"', response.content.decode())) == 2
    assert other.secrets.filter(active=True).count() == 1 and portal.secrets.filter(active=True).count() == 2


def test_adding_a_portal_with_a_typed_secret(admin_client: Client, db) -> None:
    def add(secret: str):
        return admin_client.post(
            "/admin/webhooks/portal/add/",
            {
                "slug": "tito",
                "name": "Tito",
                "active": "on",
                "rate_limit_per_minute": "",
                "secrets-TOTAL_FORMS": "1",
                "secrets-INITIAL_FORMS": "0",
                "secrets-MIN_NUM_FORMS": "0",
                "secrets-MAX_NUM_FORMS": "1000",
                "secrets-0-secret": secret,
                "secrets-0-active": "on",
            },
        )

    assert add("whsec_AAAA").status_code == 200 and not Portal.objects.filter(slug="tito").exists()
    assert add(VALID_TYPED).status_code == 302
    assert Portal.objects.get(slug="tito").secrets.get().secret == VALID_TYPED


# --- issue 21: the first secret on add, "New secret", create_portal's rotation, deleting a portal with data

ADD_URL = "/admin/webhooks/portal/add/"


def new_secret_in(response) -> str:
    found = re.findall(r'<code class="new-secret">(whsec_[^<]+)</code>', response.content.decode())
    assert len(found) == 1, response.content.decode()[:3000]
    return found[0]


def test_adding_a_portal_without_a_secret_creates_its_first_one_and_shows_it_once(admin_client: Client) -> None:
    # When staff add a portal and type no secret
    response = admin_client.post(
        ADD_URL,
        {
            "slug": "tito",
            "name": "Tito",
            "active": "on",
            "rate_limit_per_minute": "",
            "secrets-TOTAL_FORMS": "0",
            "secrets-INITIAL_FORMS": "0",
            "secrets-MIN_NUM_FORMS": "0",
            "secrets-MAX_NUM_FORMS": "1000",
        },
    )
    # Then the answer shows its first secret, once, uncached
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = new_secret_in(response)
    portal = Portal.objects.get(slug="tito")
    assert list(portal.secrets.filter(active=True).values_list("secret", flat=True)) == [secret]
    assert "its first secret" in response.content.decode()
    # and it signs (the portal no longer answers every webhook 401)
    portal_cache_clear()
    body = encode(payload("R-TITO"))
    headers = {k: v for k, v in signed_headers(body, secret=secret).items() if k != "content-type"}
    assert (
        Client().post("/webhooks/tito/", data=body, content_type="application/json", headers=headers).status_code == 202
    )
    # and it is never shown again
    for url in (LIST_URL, change_url(portal)):
        page = admin_client.get(url).content.decode()
        assert secret not in page and mask_secret(secret) in page
    assert LogEntry.objects.filter(object_id=str(portal.pk)).count() == 1, "the addition is in its history once"


def test_the_portal_page_offers_new_secret_without_one_and_rotate_secret_with_one(admin_client: Client, db) -> None:
    portal = PortalFactory(slug="bare", name="Bare")
    page = admin_client.get(change_url(portal)).content.decode()
    assert ">New secret</button>" in page and ">Rotate secret</button>" not in page
    url = f"{LIST_URL}{portal.pk}/new-secret/"
    assert admin_client.get(url).status_code == 403, "a GET creates nothing"
    assert portal.secrets.count() == 0
    response = admin_client.post(url)
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    assert [new_secret_in(response)] == list(portal.secrets.values_list("secret", flat=True))
    page = admin_client.get(change_url(portal)).content.decode()
    assert ">Rotate secret</button>" in page and ">New secret</button>" not in page
    # The list's action says both names
    assert "New secret for a portal without one" in admin_client.get(LIST_URL).content.decode()


def test_the_secret_button_needs_the_rotate_permission(portal: Portal) -> None:
    viewer = staff_client("view_portal", "change_portal")
    assert "secret</button>" not in viewer.get(change_url(portal)).content.decode()
    assert viewer.post(f"{LIST_URL}{portal.pk}/new-secret/").status_code == 403
    assert portal.secrets.count() == 1


def test_create_portal_with_a_new_secret_for_an_existing_portal_says_it_added_a_second_active_secret(
    portal: Portal,
) -> None:
    out = io.StringIO()
    call_command("create_portal", "pretix", "--secret", VALID_TYPED, stdout=out)
    assert "added a second active secret" in out.getvalue()
    assert "2 active secrets" in out.getvalue()
    # Run again with the same secret: nothing added, nothing said
    out = io.StringIO()
    call_command("create_portal", "pretix", "--secret", VALID_TYPED, stdout=out)
    assert "added" not in out.getvalue() and portal.secrets.count() == 2
    # A new portal's first secret is not a "second" one
    out = io.StringIO()
    call_command("create_portal", "fresh", "--secret", VALID_TYPED, stdout=out)
    assert "added" not in out.getvalue() and "created portal fresh" in out.getvalue()


def test_deleting_a_portal_with_data_says_the_data_is_kept_and_suggests_unticking_active(
    admin_client: Client, portal: Portal
) -> None:
    # Given a portal that received a webhook
    assert deliver(SECRET, "R-KEEP") == 202
    # When a superuser opens its delete page
    response = admin_client.get(f"{LIST_URL}{portal.pk}/delete/", follow=True)
    # Then they are back on its page with a message that says why and what to do, not "no permission"
    html = response.content.decode()
    assert response.redirect_chain[-1][0] == change_url(portal)
    assert "data is kept" in html and "untick “Active”" in html
    assert "permission" not in html.split('class="messagelist"')[1].split("</ul>")[0]
    # And the list's bulk delete says the same and deletes nothing
    response = admin_client.post(
        LIST_URL, {"action": "delete_selected", "_selected_action": [str(portal.pk)]}, follow=True
    )
    assert "data is kept" in response.content.decode()
    assert Portal.objects.filter(pk=portal.pk).exists()
    # A portal without data is deleted as usual
    empty = PortalFactory(slug="empty", name="Empty")
    assert admin_client.get(f"{LIST_URL}{empty.pk}/delete/").status_code == 200
    assert admin_client.post(f"{LIST_URL}{empty.pk}/delete/", {"post": "yes"}).status_code == 302
    assert not Portal.objects.filter(pk=empty.pk).exists()


def test_the_event_page_shows_the_body_as_received_beside_the_normalised_payload(portal: Portal) -> None:
    # Given a delivery whose address came padded (parse once: the trimmed one is stored and applied)
    portal_cache_clear()
    body = encode(payload("R-RAW", email="  ada@Example.ORG\r\n"))
    headers = {k: v for k, v in signed_headers(body).items() if k != "content-type"}
    assert (
        Client().post("/webhooks/pretix/", data=body, content_type="application/json", headers=headers).status_code
        == 202
    )
    event = WebhookEvent.objects.get(delivery_id=headers["webhook-id"])
    # When support (view permission only) opens the event
    page = staff_client("view_webhookevent").get(f"/admin/webhooks/webhookevent/{event.id}/change/")
    # Then the page shows the payload as applied and the body as the portal wrote it
    assert page.status_code == 200
    text = page.content.decode()
    assert "Body as received" in text
    assert "&quot;ada@example.org&quot;" in text or '"ada@example.org"' in text
    assert "ada@Example.ORG\\r\\n" in text, "the raw JSON, escapes and case as sent"
