"""An edited wording is what the next real registrations get: signed webhooks to gunicorn, the relay,
a Dramatiq worker process, aiosmtpd; a new version saved while they run reaches the worker within
MESSAGE_TEMPLATES_CHECK_SECONDS, without a restart."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterator

import pytest

from apps.notifications.message_templates import message_template_save
from apps.notifications.models import MessageTemplate, Notification
from apps.webhooks.models import Portal
from tests.support.notifications import emails_by_notification
from tests.support.smtp import SmtpServer
from tests.support.stack import Stack, wait_for_emails

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FIRST, SECOND = 20, 10


@pytest.fixture
def stack(portal: Portal, smtp_server: SmtpServer) -> Iterator[Stack]:
    stack = Stack(smtp_server, MESSAGE_TEMPLATES_CHECK_SECONDS="1")
    yield stack
    stack.stop()


def save(template: MessageTemplate, subject: str, text: str) -> int:
    version = message_template_save(template=template, subject=subject, text=text, html="", user=None)
    return version.id


def test_registrations_get_the_edited_wording_and_the_next_version_without_a_restart(
    portal: Portal, smtp_server: SmtpServer, stack: Stack
) -> None:
    # The portal's own wording: the worker also has to find each notification's portal.
    template = MessageTemplate.objects.create(
        kind="confirmation", channel="email", locale="en", role="attendee", portal=portal
    )
    first = save(template, "Edited for {{ first_name }}: {{ event_name }}", "Version one, {{ first_name }}.")
    statuses: collections.Counter[int] = collections.Counter()
    stack.send_in_background([f"R-TPL-{n}" for n in range(FIRST)], statuses).result(timeout=120)
    wait_for_emails(stack, smtp_server, FIRST)

    second = save(template, "Second for {{ first_name }}", "Version two, {{ first_name }}.")
    time.sleep(2)  # the worker's store checks the count at most once a second (MESSAGE_TEMPLATES_CHECK_SECONDS)
    stack.send_in_background([f"R-TPL-B{n}" for n in range(SECOND)], statuses).result(timeout=120)
    wait_for_emails(stack, smtp_server, FIRST + SECOND)
    time.sleep(2)  # a duplicate would arrive within this window

    counts = emails_by_notification(smtp_server)
    assert len(counts) == FIRST + SECOND and set(counts.values()) == {1}, counts
    notifications = {str(n.id): n for n in Notification.objects.filter(kind="confirmation", channel="email")}
    by_version: collections.Counter[int | None] = collections.Counter()
    for message in smtp_server.messages:
        notification = notifications[message["X-Eventplatform-Notification-Id"]]
        by_version[notification.template_version_id] += 1
        body = message.get_body(("plain",)).get_content()
        if notification.registration.external_id.startswith("R-TPL-B"):
            assert (message["Subject"], body.strip()) == ("Second for Ada", "Version two, Ada."), stack.logs()
            assert notification.template_version_id == second
        else:
            assert (message["Subject"], body.strip()) == ("Edited for Ada: PyData Berlin", "Version one, Ada.")
            assert notification.template_version_id == first
        assert message.get_body(("html",)) is None  # the version has no HTML part
    assert by_version == {first: FIRST, second: SECOND}
