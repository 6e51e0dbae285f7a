"""The wording pages of the admin (Django's test client; tests/support/test_template_admin_browser.py
drives them in Chromium): who may do what, preview, refusals, test send, history and revert."""

from __future__ import annotations

import html
import re
from collections.abc import Callable

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from apps.notifications.message_templates import message_template_save
from apps.notifications.models import MessageTemplate, MessageTemplateVersion, Notification
from apps.notifications.services import notification_send
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.django_db

LIST = "/admin/notifications/messagetemplate/"
TEMPLATE_PERMISSIONS = ("view_messagetemplate", "change_messagetemplate", "add_messagetemplate")


def staff(client: Client, *permissions: str, email: str = "editor@example.org") -> User:
    user = User.objects.create_user("editor", email, "pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=permissions))
    client.force_login(user)
    return user


@pytest.fixture
def confirmation() -> MessageTemplate:
    template = MessageTemplate.objects.create(kind="confirmation", channel="email", locale="en", role="attendee")
    message_template_save(
        template=template,
        subject="Welcome {{ first_name }}",
        text="Hello {{ first_name }}, see you at {{ event_name }}.",
        html="<p>Hello <b>{{ first_name }}</b></p>",
        user=None,
    )
    return template


def page(template: MessageTemplate) -> str:
    return f"{LIST}{template.id}/change/"


def post(client: Client, template: MessageTemplate, action: str, **fields: str) -> str:
    data = {"action": action, "subject": "", "text": "", "html": "", "registration": "", **fields}
    response = client.post(page(template), data, follow=True)
    assert response.status_code == 200
    return response.content.decode()


def test_only_the_template_permissions_open_the_pages(client: Client, confirmation: MessageTemplate) -> None:
    staff(client, "view_notification")
    assert client.get(LIST).status_code == 403
    assert client.get(page(confirmation)).status_code == 403
    assert client.post(page(confirmation), {"action": "save", "text": "x"}).status_code == 403


def test_view_permission_alone_sees_but_cannot_save_revert_or_send(
    client: Client, confirmation: MessageTemplate
) -> None:
    staff(client, "view_messagetemplate")
    content = client.get(page(confirmation)).content.decode()
    assert "Welcome Ada" in content and 'id="save-button"' not in content and 'id="test-button"' not in content
    for action in ("save", "test", "revert", "preview"):
        response = client.post(page(confirmation), {"action": action, "text": "x", "number": "1"})
        assert response.status_code == 403
    assert confirmation.versions.count() == 1


def test_edit_preview_and_save_a_new_version(client: Client, confirmation: MessageTemplate) -> None:
    user = staff(client, *TEMPLATE_PERMISSIONS)
    content = client.get(page(confirmation)).content.decode()
    assert 'id="preview-subject">Welcome Ada<' in content
    assert "Hello Ada, see you at PyCon Sample." in content
    iframe = re.search(r'<iframe id="preview-html" sandbox="" srcdoc="([^"]*)"', content)
    assert iframe and html.unescape(iframe.group(1)) == "<p>Hello <b>Ada</b></p>"

    fields = {"subject": "Hi {{ first_name }}!", "text": "New text for {{ first_name }}.", "html": ""}
    previewed = post(client, confirmation, "preview", **fields)
    assert 'id="preview-subject">Hi Ada!<' in previewed and "No HTML part" in previewed
    assert confirmation.versions.count() == 1  # a preview saves nothing

    saved = post(client, confirmation, "save", **fields)
    assert "Version 2 saved" in saved
    version = confirmation.versions.get(number=2)
    assert (version.subject, version.created_by, version.created_by_name) == ("Hi {{ first_name }}!", user, "editor")
    assert "+New text for {{ first_name }}." in html.unescape(saved)  # the diff against version 1
    assert "-Hello {{ first_name }}, see you at {{ event_name }}." in html.unescape(saved)


def test_a_broken_template_is_refused_with_its_line_and_nothing_is_saved(
    client: Client, confirmation: MessageTemplate
) -> None:
    staff(client, *TEMPLATE_PERMISSIONS)
    content = html.unescape(
        post(client, confirmation, "save", subject="ok", text="Hello\n{{ first_name }}\n{{ ticket_price }}")
    )
    assert "Line 3: unknown variable 'ticket_price'" in content
    content = html.unescape(
        post(client, confirmation, "save", subject="ok", text="x", html='<p>\n{% include "a.html" %}')
    )
    assert "Line 2: the tag {% include %} is not allowed" in content
    assert 'id="preview-refused"' in content
    assert confirmation.versions.count() == 1


def test_preview_with_a_chosen_registration_escapes_its_markup(
    client: Client, confirmation: MessageTemplate, make_notification: Callable[..., Notification]
) -> None:
    user = staff(client, *TEMPLATE_PERMISSIONS)
    notification = make_notification(first_name="<script>alert(1)</script>")
    # An attendee's data is for who may see registrations anyway.
    refused = client.get(f"{page(confirmation)}?registration={notification.registration_id}").content.decode()
    assert "needs the permission to view registrations" in refused and "alert(1)" not in refused
    user.user_permissions.add(Permission.objects.get(codename="view_registration"))
    content = client.get(f"{page(confirmation)}?registration={notification.registration_id}").content.decode()
    srcdoc = re.search(r'srcdoc="([^"]*)"', content)
    assert srcdoc and html.unescape(srcdoc.group(1)) == "<p>Hello <b>&lt;script&gt;alert(1)&lt;/script&gt;</b></p>"
    assert "<script>alert(1)" not in content
    missing = client.get(f"{page(confirmation)}?registration=999999").content.decode()
    assert "No notification of registration 999999" in missing


def test_send_me_a_test_arrives_at_my_own_address_and_creates_no_notification(
    client: Client, confirmation: MessageTemplate, email_via_smtp: SmtpServer
) -> None:
    staff(client, *TEMPLATE_PERMISSIONS)
    content = post(client, confirmation, "test", subject="Try {{ event_name }}", text="Body {{ first_name }}")
    assert "Test message sent to editor@example.org" in content
    (message,) = email_via_smtp.messages
    assert (message["To"], message["Subject"]) == ("editor@example.org", "[Test] Try PyCon Sample")
    assert "Body Ada" in message.get_body(("plain",)).get_content()
    assert not Notification.objects.exists() and confirmation.versions.count() == 1


def test_a_test_with_a_chosen_registration_comes_from_its_portals_sender_without_its_calendar_entry(
    client: Client,
    confirmation: MessageTemplate,
    email_via_smtp: SmtpServer,
    make_notification: Callable[..., Notification],
) -> None:
    user = staff(client, *TEMPLATE_PERMISSIONS, "view_registration")
    notification = make_notification(
        sender_email_from="Pretix Conf <hello@conf.example.org>", calendar_uid="reg-7", calendar_sequence=0
    )
    fields = {"subject": "s", "text": "t", "registration": str(notification.registration_id)}
    assert "Test message sent to" in post(client, confirmation, "test", **fields)
    (message,) = email_via_smtp.messages
    assert (message["From"], message["To"]) == ("Pretix Conf <hello@conf.example.org>", user.email)
    assert all(part.get_content_type() != "text/calendar" for part in message.walk())


def test_send_me_a_test_without_an_address_of_ones_own_is_refused(
    client: Client, confirmation: MessageTemplate, email_via_smtp: SmtpServer
) -> None:
    staff(client, *TEMPLATE_PERMISSIONS, email="")
    content = post(client, confirmation, "test", subject="s", text="t")
    assert "Your user has no e-mail address" in content
    assert email_via_smtp.messages == []


def test_revert_saves_a_copy_of_the_old_version(client: Client, confirmation: MessageTemplate) -> None:
    staff(client, *TEMPLATE_PERMISSIONS)
    post(client, confirmation, "save", subject="Second", text="Second text")
    content = post(client, confirmation, "revert", number="1")
    assert "Version 3 saved: a copy of version 1" in content
    latest = confirmation.versions.order_by("-number").first()
    assert latest and (latest.number, latest.subject, latest.note) == (
        3,
        "Welcome {{ first_name }}",
        "revert to version 1",
    )
    assert list(MessageTemplateVersion.objects.values_list("number", flat=True).order_by("number")) == [1, 2, 3]
    for number in ("9", "x", ""):
        assert client.post(page(confirmation), {"action": "revert", "number": number}).status_code == 404


def test_sms_preview_counts_segments_and_a_2000_character_body_is_refused(client: Client) -> None:
    staff(client, *TEMPLATE_PERMISSIONS)
    sms = MessageTemplate.objects.create(kind="confirmation", channel="sms", locale="en", role="attendee")
    content = post(client, sms, "preview", text="{{ first_name }} " + "a" * 200)
    assert "204 characters, GSM-7: <strong>2 SMS parts</strong> (sent as 2 concatenated parts of 153" in content
    content = post(client, sms, "preview", text="Zażółć {{ first_name }}")
    assert "10 characters, UCS-2: <strong>1 SMS part</strong>." in content
    content = post(client, sms, "save", text="x" * 2000)
    assert "14 SMS parts (GSM-7); at most 10 parts are allowed" in content
    assert not sms.versions.exists()


def test_adding_a_template_starts_from_the_shipped_wording(client: Client) -> None:
    staff(client, *TEMPLATE_PERMISSIONS)
    response = client.post(
        f"{LIST}add/", {"kind": "update", "channel": "email", "locale": "fr_CA", "role": "speaker", "portal": ""}
    )
    template = MessageTemplate.objects.get()
    assert response.status_code == 302 and response["Location"] == page(template)
    assert (template.locale, template.versions.get().note) == ("fr-ca", "shipped default")
    refused = client.post(f"{LIST}add/", {"kind": "update", "channel": "sms", "locale": "en", "role": "attendee"})
    assert "not sent on this channel" in refused.content.decode()


def test_add_a_locale_creates_every_message_from_the_chain(client: Client) -> None:
    staff(client, "view_messagetemplate", "change_messagetemplate")
    assert client.post(f"{LIST}add-locale/", {"locale": "fr"}).status_code == 403
    User.objects.get().user_permissions.add(Permission.objects.get(codename="add_messagetemplate"))
    response = client.post(f"{LIST}add-locale/", {"locale": "fr", "portal": ""}, follow=True)
    assert "16 templates created for &#x27;fr&#x27;" in response.content.decode()
    assert MessageTemplate.objects.filter(locale="fr").count() == 16
    first = MessageTemplate.objects.get(locale="fr", kind="confirmation", channel="email", role="attendee")
    assert "your registration is confirmed" in first.versions.get().text  # English until translated


def test_the_notification_page_shows_the_wording_it_was_sent_with(
    client: Client,
    confirmation: MessageTemplate,
    email_via_smtp: SmtpServer,
    make_notification: Callable[..., Notification],
) -> None:
    client.force_login(User.objects.create_superuser("root", "root@example.org", "pw"))
    notification = make_notification()
    pending = client.get(f"/admin/notifications/notification/{notification.id}/change/").content.decode()
    assert "not sent yet" in pending
    notification_send(notification_id=str(notification.id))
    content = client.get(f"/admin/notifications/notification/{notification.id}/change/").content.decode()
    assert f'href="{page(confirmation)}">version 1 of confirmation/email en attendee (all portals)</a>' in content
    shipped = make_notification(locale="de")  # German has shipped files, nearer than the English edit
    notification_send(notification_id=str(shipped.id))
    content = client.get(f"/admin/notifications/notification/{shipped.id}/change/").content.decode()
    assert "shipped default" in content
