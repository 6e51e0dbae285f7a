"""A slow provider is not a failed one (issue 17, item 1): the reply to the end of DATA gets
EMAIL_DATA_TIMEOUT_SECONDS, and a message whose answer never came is `outcome_unknown`, never sent
again by itself. Counted where it matters: at the real aiosmtpd server and the SMS stand-in."""

from __future__ import annotations

import collections
from collections.abc import Callable

import pytest
from django.core import checks as django_checks

from apps.notifications.channels import reset_providers
from apps.notifications.checks import claim_outlasts_a_send, longest_send_seconds
from apps.notifications.errors import ProviderTransientError
from apps.notifications.models import Notification
from apps.notifications.services import notification_send
from tests.support.sms import SmsApi
from tests.support.smtp import SmtpServer

pytestmark = pytest.mark.django_db

Make = Callable[..., Notification]


def send_with_retries(notifications: list[Notification], *, rounds: int = 3) -> None:
    """What Dramatiq does: a send that raised a temporary failure is run again (here at once)."""
    for _ in range(rounds):
        for notification in notifications:
            try:
                notification_send(notification_id=str(notification.id))
            except ProviderTransientError:
                pass


def statuses(notifications: list[Notification]) -> collections.Counter[tuple[str, str]]:
    rows = Notification.objects.filter(id__in=[n.id for n in notifications])
    return collections.Counter(rows.values_list("status", "last_error_code"))


def test_a_server_slow_to_answer_the_final_dot_gets_each_email_once(
    settings,
    email_via_smtp: SmtpServer,
    make_notification: Make,
) -> None:
    # Given a server that takes 1.5 s to answer the end of DATA (content scanning), longer than
    # EMAIL_TIMEOUT (1 s) and well within the data timeout
    settings.EMAIL_TIMEOUT, settings.EMAIL_DATA_TIMEOUT_SECONDS = 1, 10
    settings.NOTIFICATION_BREAKER_THRESHOLD = 1000  # (so that a timeout, if counted, is retried at once)
    reset_providers()
    email_via_smtp.handler.data_delay = 1.5
    notifications = [make_notification() for _ in range(10)]
    # When they are sent, retries included
    send_with_retries(notifications)
    # Then each arrived exactly once, and each is `sent`
    ids = collections.Counter(email_via_smtp.ids())
    assert ids == {str(n.id): 1 for n in notifications}
    assert statuses(notifications) == {("sent", ""): 10}


def test_no_reply_to_the_final_dot_is_outcome_unknown_and_never_sent_again(
    settings,
    email_via_smtp: SmtpServer,
    make_notification: Make,
) -> None:
    # Given a server that takes the whole message and never answers the final "."
    settings.EMAIL_TIMEOUT, settings.EMAIL_DATA_TIMEOUT_SECONDS = 1, 1.5
    reset_providers()
    email_via_smtp.handler.data_delay = None
    notifications = [make_notification() for _ in range(3)]
    # When they are sent, and sent again as a retry, a redelivery or the rescue sweep would
    send_with_retries(notifications)
    # Then each arrived once, and each stops, for staff, as outcome_unknown
    assert collections.Counter(email_via_smtp.ids()) == {str(n.id): 1 for n in notifications}
    assert statuses(notifications) == {("dead", "outcome_unknown"): 3}
    (attempt,) = notifications[0].attempt_log.all()
    assert attempt.error_code == "outcome_unknown"


@pytest.fixture
def slow_sms(settings, sms_via_api: SmsApi) -> SmsApi:
    settings.SMS_TIMEOUT_SECONDS = 1
    reset_providers()
    sms_via_api.answer_delay = 2  # the provider has the message, its answer comes after our timeout
    return sms_via_api


def test_an_sms_answered_too_late_is_found_in_the_providers_listing_and_sent_once(
    slow_sms: SmsApi,
    make_notification: Make,
    make_registration: Callable[..., object],
) -> None:
    notifications = [
        make_notification(channel="sms", registration=make_registration(phone=f"+491511234560{i}")) for i in range(5)
    ]
    send_with_retries(notifications)
    assert collections.Counter(form["To"] for form in slow_sms.received) == {f"+491511234560{i}": 1 for i in range(5)}
    assert statuses(notifications) == {("sent", ""): 5}
    assert slow_sms.listings == 5
    sids = set(
        Notification.objects.filter(id__in=[n.id for n in notifications]).values_list("provider_message_id", flat=True)
    )
    assert sids == set(slow_sms.sids)  # the provider's own sid, read from the listing


def test_an_unanswered_sms_whose_listing_fails_is_outcome_unknown(slow_sms: SmsApi, make_notification: Make) -> None:
    slow_sms.listing_status = 503
    notification = make_notification(channel="sms")
    send_with_retries([notification])
    assert len(slow_sms.received) == 1
    assert statuses([notification]) == {("dead", "outcome_unknown"): 1}


def test_the_claim_must_outlast_the_longest_send(settings) -> None:
    settings.EMAIL_TIMEOUT, settings.EMAIL_DATA_TIMEOUT_SECONDS, settings.SMS_TIMEOUT_SECONDS = 10, 600, 10
    settings.EMAIL_FALLBACK_URL = settings.EMAIL_FALLBACK_BACKEND = ""
    assert longest_send_seconds() == 6 * 10 + 600 + 60
    settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS = 300  # the old default: a slow send would be claimed twice
    assert [error.id for error in claim_outlasts_a_send()] == ["notifications.E001"]
    settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS = 900
    assert claim_outlasts_a_send() == []
    settings.EMAIL_FALLBACK_URL = "smtp://127.0.0.1:2525"  # a misconfigured primary hands the send over
    assert [error.id for error in claim_outlasts_a_send()] == ["notifications.E001"]
    settings.EMAIL_FALLBACK_URL = ""
    settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS = settings.BROKER_CONSUMER_TIMEOUT_SECONDS
    assert [error.id for error in claim_outlasts_a_send()] == ["notifications.E002"]


def test_the_check_runs_with_djangos_system_checks_and_the_defaults_pass() -> None:
    assert claim_outlasts_a_send in django_checks.registry.registry.get_checks()
    assert claim_outlasts_a_send() == []


def test_the_actors_that_send_are_not_interrupted_before_the_claim_expires(settings) -> None:
    from apps.notifications import tasks
    from apps.registrations.tasks import webhook_event_apply

    claim_ms = settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS * 1000
    assert tasks.notification_send_actor.options["time_limit"] == claim_ms
    assert tasks.notification_probe.options["time_limit"] == claim_ms
    assert webhook_event_apply.options["time_limit"] == 2 * claim_ms
    assert claim_ms > longest_send_seconds() * 1000
