"""Wording edited in the admin: the safe engine's refusals (with their line), SMS segments, versions,
which wording wins (portal, all portals, the shipped files, along the locale chain), the per-process
cache and its invalidation, and what a send records."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from structlog.testing import capture_logs

from apps.notifications import template_store
from apps.notifications.message_templates import (
    TemplateSaveRefused,
    message_template_add_locale,
    message_template_revert,
    message_template_save,
    shipped_default,
)
from apps.notifications.models import MessageTemplate, MessageTemplateVersion, Notification
from apps.notifications.rendering import render
from apps.notifications.services import notification_send
from apps.notifications.template_engine import SMS_MAX_SEGMENTS, sms_segments
from apps.webhooks.models import Portal
from apps.webhooks.services import portal_create
from tests.notifications.factories import RENDER_CONTEXT
from tests.support import webhooks
from tests.support.processes import process_env
from tests.support.sms import SmsApi
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.django_db

CONTEXT = RENDER_CONTEXT
EMAIL = {"subject": "Hi {{ first_name }}", "text": "Text for {{ first_name }}", "html": "<p>{{ first_name }}</p>"}


@pytest.fixture
def editor() -> User:
    return User.objects.create_user("editor", "editor@example.org", "pw", is_staff=True)


def template(
    kind: str = "confirmation",
    channel: str = "email",
    locale: str = "en",
    role: str = "attendee",
    portal: Portal | None = None,
) -> MessageTemplate:
    return MessageTemplate.objects.create(kind=kind, channel=channel, locale=locale, role=role, portal=portal)


def save(target: MessageTemplate, user: User | None = None, **parts: str) -> MessageTemplateVersion:
    fields = {**EMAIL, **parts} if target.channel == "email" else {"subject": "", "html": "", **parts}
    return message_template_save(template=target, user=user, **fields)


def refusal(target: MessageTemplate, **parts: str) -> dict[str, str]:
    with pytest.raises(TemplateSaveRefused) as refused:
        save(target, **parts)
    assert not MessageTemplateVersion.objects.filter(template=target).exists()
    return refused.value.errors


# --- refused at save, each with the line that fails
@pytest.mark.parametrize(
    ("text", "line", "said"),
    [
        ('Hello\n{% include "notifications/en/_greeting.txt" %}', 2, "{% include %} is not allowed"),
        ('{% extends "admin/base.html" %}', 1, "{% extends %} is not allowed"),
        ("one\ntwo\n{% load event_dates %}", 3, "{% load %} is not allowed"),
        ("{% load static %}", 1, "{% load %} is not allowed"),
        ("{% debug %}", 1, "{% debug %} is not allowed"),
        ("{% url 'admin:index' %}", 1, "{% url %} is not allowed"),
        ("{% autoescape off %}{{ first_name }}{% endautoescape %}", 1, "{% autoescape %} is not allowed"),
        ("{% csrf_token %}", 1, "{% csrf_token %} is not allowed"),
        ("{% regroup event_name by x as y %}", 1, "{% regroup %} is not allowed"),
        ("Hello\n\n{{ password }}", 3, "unknown variable 'password'"),
        ("{% if secret_key %}x{% endif %}", 1, "unknown variable 'secret_key'"),
        ("{% for x in settings.DATABASES %}{{ x }}{% endfor %}", 1, "unknown variable 'settings'"),
        ("{{ event_name|default:request }}", 1, "unknown variable 'request'"),
        ("x\n{% if first_name %}", 2, "Unclosed tag"),
        ("ok\nok\n{{ starts_local|timesince:'soon' }}", 3, "does not render"),
    ],
)
def test_a_version_that_is_not_safe_or_does_not_render_is_refused_with_its_line(
    text: str, line: int, said: str
) -> None:
    errors = refusal(template(), text=text)
    assert said in errors["text"] and errors["text"].startswith(f"Line {line}:"), errors


def test_each_part_is_checked_and_named() -> None:
    errors = refusal(template(), subject="{{ nope }}", html="<p>\n{% include 'x.html' %}</p>")
    assert set(errors) == {"subject", "html"}
    assert "unknown variable 'nope'" in errors["subject"] and errors["html"].startswith("Line 2:")


def test_safe_is_refused_in_html_where_it_would_unescape_attendee_data() -> None:
    errors = refusal(template(), text="{{ first_name|safe }}", html="<p>\n{{ first_name|safe }}</p>")
    assert set(errors) == {"html"} and errors["html"] == "Line 2: Invalid filter: 'safe'"


def test_loop_and_with_variables_are_known_inside_the_template() -> None:
    target = template()
    save(target, text="{% with name=first_name|upper %}{{ name }}{% endwith %}")
    save(target, text="{% for c in event_name %}{{ c }}{{ forloop.counter }}{% endfor %}")
    save(target, text='{% now "Y" as year %}{{ year }} {% firstof event_venue "online" as where %}{{ where }}')
    save(target, text="{% cycle 'a' 'b' as ab %}{{ ab }} {% widthratio 3 4 100 as pct %}{{ pct }}")
    assert target.versions.count() == 4


def test_a_2000_character_sms_is_refused_at_save() -> None:
    errors = refusal(template(channel="sms"), text="x" * 2000)
    assert f"at most {SMS_MAX_SEGMENTS} parts" in errors["text"] and "14 SMS parts (GSM-7)" in errors["text"]


# --- SMS segments, one row per rule
@pytest.mark.parametrize(
    ("text", "encoding", "units", "count"),
    [
        ("", "GSM-7", 0, 0),
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("é" * 160, "GSM-7", 160, 1),  # in the GSM basic set
        ("€" * 80, "GSM-7", 160, 1),  # extension set: two septets each
        ("€" * 81, "GSM-7", 162, 2),
        ("ł" * 70, "UCS-2", 70, 1),  # not in GSM 03.38
        ("ł" * 71, "UCS-2", 71, 2),
        ("ł" * 134, "UCS-2", 134, 2),
        ("ł" * 135, "UCS-2", 135, 3),
        ("a" * 159 + "ł", "UCS-2", 160, 3),  # one character outside GSM makes the whole text UCS-2
        ("😀" * 35, "UCS-2", 70, 1),  # outside the BMP: two UTF-16 units each
        ("😀" * 36, "UCS-2", 72, 2),
    ],
)
def test_sms_segments(text: str, encoding: str, units: int, count: int) -> None:
    segments = sms_segments(text)
    assert (segments.encoding, segments.units, segments.count) == (encoding, units, count)


# --- versions
def test_every_save_is_a_new_version_with_who_and_a_revert_copies_an_old_one(editor: User) -> None:
    target = template()
    first = save(target, editor, text="First {{ first_name }}")
    second = save(target, editor, text="Second {{ first_name }}")
    assert (first.number, second.number, second.created_by, second.created_by_name) == (1, 2, editor, "editor")
    assert render(kind="confirmation", channel="email", context=CONTEXT).text == "Second Ada\n"
    reverted = message_template_revert(template=target, number=1, user=editor)
    assert (reverted.number, reverted.text, reverted.note) == (3, "First {{ first_name }}", "revert to version 1")
    assert list(target.versions.order_by("number").values_list("text", flat=True)) == [
        "First {{ first_name }}",
        "Second {{ first_name }}",
        "First {{ first_name }}",
    ]
    assert render(kind="confirmation", channel="email", context=CONTEXT).text == "First Ada\n"


# --- which wording wins
def test_attendee_markup_is_escaped_in_html_and_control_characters_stripped() -> None:
    save(template(), subject="Hi {{ first_name }}", html="<p>Hello {{ first_name }}</p>")
    email = render(
        kind="confirmation", channel="email", context={**CONTEXT, "first_name": "<script>alert(1)</script>\r\nBcc: x"}
    )
    assert email.html == "<p>Hello &lt;script&gt;alert(1)&lt;/script&gt; Bcc: x</p>"
    assert email.subject == "Hi <script>alert(1)</script> Bcc: x"  # text parts are not HTML; no line break


def test_the_portals_own_wording_wins_then_all_portals_then_the_shipped_files(portal: Portal) -> None:
    other, _, _ = portal_create(slug="tito", name="Tito", secret=webhooks.SECRET)
    assert "your registration is confirmed" in render(kind="confirmation", channel="email", context=CONTEXT).text
    save(template(), text="For every portal")
    save(template(portal=portal), text="For pretix")
    assert render(kind="confirmation", channel="email", context=CONTEXT, portal_id=portal.id).text == "For pretix\n"
    assert (
        render(kind="confirmation", channel="email", context=CONTEXT, portal_id=other.id).text == "For every portal\n"
    )
    # Another role, kind or channel keeps the shipped wording.
    assert (
        "thank you for speaking"
        in render(
            kind="confirmation", channel="email", context={**CONTEXT, "role": "speaker"}, portal_id=portal.id
        ).text
    )
    assert "cancelled" in render(kind="cancellation", channel="email", context=CONTEXT).text.lower()
    assert "registered for" in render(kind="confirmation", channel="sms", context=CONTEXT).text


def test_edits_follow_the_locale_chain() -> None:
    save(template(locale="en"), text="Edited English")
    save(template(locale="fr"), text="Texte {{ starts_local|date:'j F' }}")
    fr_ca = render(kind="confirmation", channel="email", context={**CONTEXT, "locale": "fr-CA"})
    assert fr_ca.text == "Texte 3 décembre\n"  # fr-ca -> fr, with French month names
    # German has shipped files: they are nearer in the chain than the English edit.
    assert "Hallo Ada" in render(kind="confirmation", channel="email", context={**CONTEXT, "locale": "de"}).text
    # Italian has none: the English edit is what `en` would be.
    assert render(kind="confirmation", channel="email", context={**CONTEXT, "locale": "it"}).text == "Edited English\n"


def test_a_locale_added_from_the_shipped_files_renders_exactly_as_the_files_do(editor: User) -> None:
    expected = {
        (kind, channel, role): render(kind=kind, channel=channel, context={**CONTEXT, "locale": "de", "role": role})
        for kind in Notification.Kind.values
        for channel in Notification.Channel.values
        for role in MessageTemplate.Role.values
        if shipped_default(kind=kind, channel=channel, role=role, locale="de")
    }
    created = message_template_add_locale(locale="de", portal_id=None, user=editor)
    assert len(created) == len(expected) == 16  # 5 kinds x 2 roles by e-mail, 3 kinds x 2 roles by SMS
    for (kind, channel, role), shipped in expected.items():
        edited = render(kind=kind, channel=channel, context={**CONTEXT, "locale": "de", "role": role})
        assert edited.template_version_id is not None
        assert (edited.subject, edited.text, edited.html) == (shipped.subject, shipped.text, shipped.html), kind
    assert message_template_add_locale(locale="de", portal_id=None, user=editor) == []  # left as they are


# --- the cache: no query per message, invalidated by a save in another process
def test_rendering_from_the_database_makes_no_query_per_message(settings, portal: Portal) -> None:
    settings.MESSAGE_TEMPLATES_CHECK_SECONDS = 60
    save(template(portal=portal), text="For pretix")
    render(kind="confirmation", channel="email", context=CONTEXT, portal_id=portal.id)  # loads the store
    with CaptureQueriesContext(connection) as queries:
        for _ in range(200):
            email = render(kind="confirmation", channel="email", context=CONTEXT, portal_id=portal.id)
    assert email.text == "For pretix\n" and len(queries) == 0


@pytest.mark.django_db(transaction=True)
def test_a_version_saved_by_another_process_is_used_after_the_check_interval(settings) -> None:
    settings.MESSAGE_TEMPLATES_CHECK_SECONDS = 60
    target = template()
    save(target, text="Version one")
    assert render(kind="confirmation", channel="email", context=CONTEXT).text == "Version one\n"
    other_process = textwrap.dedent(
        f"""
        import django; django.setup()
        from apps.notifications.message_templates import message_template_save
        from apps.notifications.models import MessageTemplate
        message_template_save(template=MessageTemplate.objects.get(id={target.id}), subject="s",
                              text="Version two", html="", user=None)
        """
    )
    subprocess.run([sys.executable, "-c", other_process], check=True, env=process_env(), timeout=60)
    # Within the interval this process keeps its snapshot (no query per message)...
    assert render(kind="confirmation", channel="email", context=CONTEXT).text == "Version one\n"
    # ...and the first lookup after it sees the other process's save.
    settings.MESSAGE_TEMPLATES_CHECK_SECONDS = 0
    assert render(kind="confirmation", channel="email", context=CONTEXT).text == "Version two\n"


def test_a_stored_version_that_no_longer_compiles_falls_back_and_is_logged() -> None:
    target = template()
    save(target, text="Edited {{ first_name }}")
    # As if saved before a tag was withdrawn from the safe engine: written past the checks.
    MessageTemplateVersion.objects.create(template=target, number=2, text="{% load static %}", created_by_name="x")
    template_store.invalidate()
    with capture_logs() as logs:
        email = render(kind="confirmation", channel="email", context=CONTEXT)
    assert "your registration is confirmed" in email.text and email.template_version_id is None
    (unusable,) = [line for line in logs if line["event"] == "message_template.unusable"]
    assert (unusable["error_code"], unusable["version"]) == ("template_refused", 2)


# --- what a send records
def test_a_sent_notification_records_the_version_it_was_rendered_with(
    email_via_smtp: SmtpServer, make_notification: Callable[..., Notification], editor: User
) -> None:
    shipped = make_notification()
    assert notification_send(notification_id=str(shipped.id)).outcome == "sent"
    version = save(template(), editor, subject="Edited: {{ event_name }}")
    edited = make_notification()
    assert notification_send(notification_id=str(edited.id)).outcome == "sent"
    shipped.refresh_from_db()
    edited.refresh_from_db()
    assert (shipped.template_version_id, edited.template_version_id) == (None, version.id)
    subjects = {message["X-Eventplatform-Notification-Id"]: message["Subject"] for message in email_via_smtp.messages}
    assert subjects[str(edited.id)] == "Edited: PyData Berlin"
    assert subjects[str(shipped.id)] == "You are registered: PyData Berlin"


def test_sms_sent_with_an_edited_wording_records_it(
    sms_via_api: SmsApi, make_notification: Callable[..., Notification], editor: User
) -> None:
    version = save(template(channel="sms"), editor, text="{{ first_name }}: see you at {{ event_name }}!\n")
    notifications = [make_notification(channel="sms") for _ in range(5)]
    for notification in notifications:
        assert notification_send(notification_id=str(notification.id)).outcome == "sent"
    assert [form["Body"] for form in sms_via_api.received] == ["Ada: see you at PyData Berlin!"] * 5
    assert {n.template_version_id for n in Notification.objects.filter(channel="sms")} == {version.id}
