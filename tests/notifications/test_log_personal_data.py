"""No log line of the send path carries a full e-mail address, phone number or the attendee's name
(issue 17, item 11): the JSON lines as the processes write them (eventplatform.logging's formatter),
captured over a send, a temporary failure whose reply quotes the address, an outcome unknown and a
dead letter."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from apps.notifications.channels import reset_providers
from apps.notifications.errors import ProviderTransientError
from apps.notifications.failures import notification_retries_exhausted
from apps.notifications.models import Notification
from apps.notifications.services import notification_send
from tests.support.sms import SmsApi
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.django_db

EMAIL, PHONE, FIRST, LAST = "grace.hopper@example.org", "+4915198765432", "Grace", "Hopper"


def test_send_failure_and_dead_letter_log_lines_carry_no_personal_data(
    settings,
    json_log: io.StringIO,
    email_via_smtp: SmtpServer,
    sms_via_api: SmsApi,
    make_notification: Callable[..., Notification],
    make_registration: Callable[..., object],
) -> None:
    registration = make_registration(email=EMAIL, phone=PHONE, first_name=FIRST, last_name=LAST)
    sent_email = make_notification(registration=registration)
    sent_sms = make_notification(channel="sms", registration=registration)
    for notification in (sent_email, sent_sms):
        assert notification_send(notification_id=str(notification.id)).outcome == "sent"
    # A temporary refusal whose reply quotes the address, then retries run out past the horizon
    failing = make_notification(kind="update", registration=registration)
    email_via_smtp.handler.scripted["RCPT"].append(f"451 4.2.0 <{EMAIL}>: mailbox busy")
    with pytest.raises(ProviderTransientError):
        notification_send(notification_id=str(failing.id))
    settings.NOTIFICATION_RETRY_HORIZON_SECONDS = 0
    assert notification_retries_exhausted(notification_id=str(failing.id)) == "dead"
    # A refusal of the address quoting it: bounced at once, the address suppressed
    refused = make_notification(kind="reminder_24h", registration=registration)
    email_via_smtp.handler.scripted["RCPT"].append(f"550 5.1.1 <{EMAIL}>: no such user")
    assert notification_send(notification_id=str(refused.id)).outcome == "bounced"
    # An SMS whose answer never came and whose listing fails: outcome unknown
    settings.SMS_TIMEOUT_SECONDS = 1
    reset_providers()
    sms_via_api.answer_delay, sms_via_api.listing_status = 2, 503
    unknown = make_notification(kind="reminder_1h", channel="sms", registration=registration)
    assert notification_send(notification_id=str(unknown.id)).outcome == "dead"

    lines = json_log.getvalue().splitlines()
    events = " ".join(lines)
    for event in (
        "notification.sent",
        "notification.transient_failure",
        "notification.dead",
        "notification.outcome_unknown",
        "notification.refused_at_handover",
        "suppression.added",
    ):
        assert event in events, f"{event} not logged: the test would prove nothing"
    assert EMAIL.split("@")[0] not in events
    assert PHONE not in events and PHONE[1:] not in events
    assert FIRST not in events and LAST not in events
