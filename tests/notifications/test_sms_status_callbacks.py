"""SMS status callbacks (apps/notifications/channels/sms/callbacks.py, CONTRACT section 8): Twilio's signature,
the MessageStatus/ErrorCode table (a test per row), replays, out-of-order and early callbacks, unknown
messages, and the whole loop through a real worker, the SMS stand-in and a live server."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from urllib.parse import urlencode

import pytest
from django.http import QueryDict
from django.test import Client
from django.utils import timezone

from apps.notifications.channels.sms.callbacks import twilio_signature as view_signature
from apps.notifications.delivery import notification_reports_apply_pending
from apps.notifications.models import Notification, NotificationReport, Suppression
from tests.support.polling import wait_until
from tests.support.sms import SmsApi
from tests.support.sms import twilio_signature as stand_in_signature

pytestmark = pytest.mark.django_db

Status = Notification.Status
BASE = "https://events.example.com"
TOKEN = "token"
NUMBER = "+4915112345678"


@pytest.fixture(autouse=True)
def _callbacks_on(settings) -> None:
    settings.PUBLIC_BASE_URL, settings.SMS_AUTH_TOKEN = BASE, TOKEN


@pytest.fixture
def sent_sms(make_notification: Callable[..., Notification]) -> Callable[..., Notification]:
    """An SMS notification as the worker's `sent` write leaves it, with Twilio's sid."""

    def make(status: str = Status.SENT) -> Notification:
        notification = make_notification(channel="sms")
        Notification.objects.filter(id=notification.id).update(
            status=status,
            sent_at=timezone.now() if status == Status.SENT else None,
            provider_message_id="SM" + uuid.uuid4().hex if status == Status.SENT else "",
        )
        notification.refresh_from_db()
        return notification

    return make


def callback(
    client: Client,
    target: Notification | uuid.UUID,
    status: str,
    *,
    sid: str = "",
    error_code: str | None = None,
    token: str = TOKEN,
    signed_url: str | None = None,
    signature: str | None = None,
    **changed_after_signing: str,
):
    """POST a status callback as Twilio does: its form fields, signed over the URL it was given; about
    the notification's own message (its MessageSid) unless `sid` names another."""
    if isinstance(target, Notification):
        path, sid = f"/sms/status/{target.id}/", sid or target.provider_message_id
    else:
        path = f"/sms/status/{target}/"
    sid = sid or "SM0123"
    form = {
        "AccountSid": "AC_test",
        "ApiVersion": "2010-04-01",
        "From": "+4930123456",
        "To": NUMBER,
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
    }
    if error_code is not None:
        form["ErrorCode"] = error_code
    signature = signature or stand_in_signature(token, signed_url or BASE + path, form)
    return client.post(
        path,
        urlencode({**form, **changed_after_signing}),
        content_type="application/x-www-form-urlencoded",
        HTTP_X_TWILIO_SIGNATURE=signature,
    )


def history(notification: Notification) -> list[tuple[str, str, bool]]:
    return list(
        NotificationReport.objects.filter(notification_id=notification.id)
        .order_by("id")
        .values_list("outcome", "status_code", "applied")
    )


def suppressed_numbers() -> list[tuple[str, str]]:
    return list(Suppression.objects.filter(channel="sms", lifted_at__isnull=True).values_list("address", "reason"))


# --- the signature


def test_the_view_computes_twilios_published_example_signature() -> None:
    # Twilio's documented example (twilio.com/docs/usage/security): token, URL, fields, signature.
    form = QueryDict(mutable=True)
    form.update(
        {
            "CallSid": "CA1234567890ABCDE",
            "Caller": "+14158675309",
            "Digits": "1234",
            "From": "+14158675309",
            "To": "+18005551212",
        }
    )
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert view_signature(auth_token="12345", url=url, form=form) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert stand_in_signature("12345", url, form.dict()) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="


@pytest.mark.parametrize(
    ("case", "options"),
    [
        ("wrong auth token", {"token": "not-the-token"}),
        ("no signature", {"signature": " "}),
        ("garbage signature", {"signature": "bm90IGEgc2lnbmF0dXJl"}),
        # What a view trusting the Host header would check: the test client's Host is `testserver`.
        ("signed over the request's own URL", {"signed_url": "http://testserver/sms/status/{id}/"}),
        ("field changed after signing", {"ErrorCode": "30005"}),
        ("another notification's URL", {"signed_url": BASE + "/sms/status/" + str(uuid.uuid4()) + "/"}),
    ],
)
def test_a_callback_without_a_valid_signature_is_403_and_changes_nothing(
    client: Client, sent_sms: Callable[..., Notification], case: str, options: dict[str, str]
) -> None:
    notification = sent_sms()
    if "signed_url" in options:
        options = {**options, "signed_url": options["signed_url"].format(id=notification.id)}
    response = callback(client, notification, "undelivered", error_code="30003", **options)
    assert response.status_code == 403, case
    assert response.json()["error"]["code"] == "invalid_provider_signature"
    notification.refresh_from_db()
    assert notification.status == Status.SENT
    assert history(notification) == []
    assert suppressed_numbers() == []


def test_without_public_base_url_no_callback_counts(
    settings, client: Client, sent_sms: Callable[..., Notification]
) -> None:
    notification = sent_sms()
    settings.PUBLIC_BASE_URL = ""
    assert callback(client, notification, "delivered").status_code == 403
    notification.refresh_from_db()
    assert notification.status == Status.SENT


def test_only_post_is_accepted(client: Client, sent_sms: Callable[..., Notification]) -> None:
    response = client.get(f"/sms/status/{sent_sms().id}/")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


# --- the table: MessageStatus and ErrorCode -> status, history, suppression (one test per row)

STATUS_ROWS = [
    # (MessageStatus, ErrorCode, status after, last_error_code, history row?, number suppressed?)
    ("delivered", None, Status.DELIVERED, "", True, False),
    ("undelivered", "30005", Status.BOUNCED, "30005", True, True),  # unknown or inactive number
    ("undelivered", "30006", Status.BOUNCED, "30006", True, True),  # landline or unreachable carrier
    ("failed", "30005", Status.BOUNCED, "30005", True, True),
    ("failed", "30006", Status.BOUNCED, "30006", True, True),
    ("undelivered", "30003", Status.BOUNCED, "30003", True, False),  # handset unreachable (off, no signal)
    ("undelivered", "30007", Status.BOUNCED, "30007", True, False),  # carrier filtering
    ("undelivered", "30008", Status.BOUNCED, "30008", True, False),  # unknown error
    ("failed", "30001", Status.BOUNCED, "30001", True, False),  # queue overflow
    ("undelivered", None, Status.BOUNCED, "bounced", True, False),  # no ErrorCode given
    ("sent", None, Status.SENT, "", False, False),
    ("queued", None, Status.SENT, "", False, False),
    ("sending", None, Status.SENT, "", False, False),
    ("accepted", None, Status.SENT, "", False, False),
    ("scheduled", None, Status.SENT, "", False, False),
    ("read", None, Status.SENT, "", False, False),  # a status we do not use (WhatsApp's)
]


@pytest.mark.parametrize(
    ("message_status", "error_code", "status", "last_error_code", "kept", "suppresses"), STATUS_ROWS
)
def test_status_row(
    client: Client,
    sent_sms: Callable[..., Notification],
    message_status: str,
    error_code: str | None,
    status: str,
    last_error_code: str,
    kept: bool,
    suppresses: bool,
) -> None:
    notification = sent_sms()
    response = callback(client, notification, message_status, error_code=error_code)
    assert response.status_code == 204
    notification.refresh_from_db()
    assert notification.status == status
    assert notification.last_error_code == last_error_code
    assert len(history(notification)) == (1 if kept else 0)
    assert suppressed_numbers() == ([(NUMBER, "bounced")] if suppresses else [])


# --- replays, order, early and unknown callbacks


def test_a_replayed_callback_is_one_history_row_and_one_suppression(
    client: Client, sent_sms: Callable[..., Notification]
) -> None:
    notification = sent_sms()
    for _ in range(5):
        assert callback(client, notification, "undelivered", error_code="30005").status_code == 204
    notification.refresh_from_db()
    assert notification.status == Status.BOUNCED
    assert history(notification) == [("bounced", "30005", True)]
    assert suppressed_numbers() == [(NUMBER, "bounced")]


def test_delivered_then_undelivered_ends_bounced(client: Client, sent_sms: Callable[..., Notification]) -> None:
    # The delivery service's forward order (sent < delivered < bounced): the later failure wins.
    notification = sent_sms()
    callback(client, notification, "delivered")
    callback(client, notification, "undelivered", error_code="30003")
    notification.refresh_from_db()
    assert notification.status == Status.BOUNCED
    assert [row[0] for row in history(notification)] == ["delivered", "bounced"]


def test_undelivered_then_a_late_delivered_stays_bounced(client: Client, sent_sms: Callable[..., Notification]) -> None:
    notification = sent_sms()
    callback(client, notification, "undelivered", error_code="30005")
    callback(client, notification, "delivered")
    notification.refresh_from_db()
    assert notification.status == Status.BOUNCED
    assert notification.last_error_code == "30005"
    assert [row[0] for row in history(notification)] == ["bounced", "delivered"]


def test_a_late_sent_after_delivered_changes_nothing(client: Client, sent_sms: Callable[..., Notification]) -> None:
    notification = sent_sms()
    callback(client, notification, "delivered")
    callback(client, notification, "sent")
    notification.refresh_from_db()
    assert notification.status == Status.DELIVERED
    assert len(history(notification)) == 1


def test_a_callback_before_our_sent_write_is_kept_and_applied_once_sent(
    client: Client, sent_sms: Callable[..., Notification]
) -> None:
    # Given the worker has sent the SMS but not yet recorded `sent` (nor the sid): the URL's id matches it.
    notification = sent_sms(status=Status.SENDING)
    assert callback(client, notification, "delivered", sid="SMearly").status_code == 204
    notification.refresh_from_db()
    assert notification.status == Status.SENDING
    assert history(notification) == [("delivered", "", False)]
    # When the worker's write lands and the scheduler's job runs: delivered.
    Notification.objects.filter(id=notification.id).update(status=Status.SENT, provider_message_id="SMearly")
    assert notification_reports_apply_pending() == {"reports_applied": 1}
    notification.refresh_from_db()
    assert notification.status == Status.DELIVERED


def test_a_callback_for_an_unknown_notification_is_2xx_and_changes_nothing(
    client: Client, sent_sms: Callable[..., Notification]
) -> None:
    notification = sent_sms()
    response = callback(client, uuid.uuid4(), "undelivered", sid=notification.provider_message_id, error_code="30005")
    assert response.status_code == 204
    notification.refresh_from_db()
    assert notification.status == Status.SENT
    assert NotificationReport.objects.count() == 0
    assert suppressed_numbers() == []


def test_a_late_callback_about_an_earlier_message_of_a_replayed_notification_changes_nothing(
    client: Client, sent_sms: Callable[..., Notification]
) -> None:
    # Given a notification replayed and sent again (a new MessageSid), the first message's late
    # `undelivered` says nothing about the second.
    notification = sent_sms()
    assert callback(client, notification, "undelivered", sid="SMfirstsend", error_code="30003").status_code == 204
    notification.refresh_from_db()
    assert notification.status == Status.SENT
    assert history(notification) == []


def test_a_callback_during_a_replays_send_is_kept_for_it(client: Client, sent_sms: Callable[..., Notification]) -> None:
    # Given a replay under way (status sending, the first send's sid still recorded), a callback with
    # a new sid may be the new send's, outrunning its `sent` write: kept, applied once it is sent.
    notification = sent_sms()
    Notification.objects.filter(id=notification.id).update(status=Status.SENDING)
    assert callback(client, notification, "delivered", sid="SMsecondsend").status_code == 204
    Notification.objects.filter(id=notification.id).update(status=Status.SENT, provider_message_id="SMsecondsend")
    assert notification_reports_apply_pending() == {"reports_applied": 1}
    notification.refresh_from_db()
    assert notification.status == Status.DELIVERED


def test_a_path_that_is_not_a_notification_id_is_404(client: Client) -> None:
    response = client.post("/sms/status/not-a-uuid/", {"MessageStatus": "delivered"})
    assert response.status_code == 404


def test_an_email_notifications_id_is_not_an_sms(client: Client, make_notification) -> None:
    email = make_notification(channel="email")
    Notification.objects.filter(id=email.id).update(status=Status.SENT)
    assert callback(client, email, "undelivered", error_code="30005").status_code == 204
    email.refresh_from_db()
    assert email.status == Status.SENT
    assert suppressed_numbers() == []


# --- the send asks for callbacks


@pytest.mark.django_db(transaction=True)
def test_every_send_carries_the_status_callback_under_public_base_url(
    sms_via_api: SmsApi, make_notification: Callable[..., Notification]
) -> None:
    from apps.notifications.sending import notification_send

    sms_via_api.calls_back = False  # BASE is not this machine
    notification = make_notification(channel="sms")
    notification_send(notification_id=str(notification.id))
    assert sms_via_api.received[-1]["StatusCallback"] == f"{BASE}/sms/status/{notification.id}/"


@pytest.mark.django_db(transaction=True)
def test_without_public_base_url_a_send_asks_for_no_callback(
    settings, sms_via_api: SmsApi, make_notification: Callable[..., Notification]
) -> None:
    from apps.notifications.sending import notification_send

    settings.PUBLIC_BASE_URL = ""
    notification = make_notification(channel="sms")
    notification_send(notification_id=str(notification.id))
    assert "StatusCallback" not in sms_via_api.received[-1]
    assert sms_via_api.callback_answers == []


# --- end to end: a real worker sends through the stand-in, which calls our live server back


@pytest.mark.django_db(transaction=True)
def test_callbacks_from_the_stand_in_end_delivered_and_bounced_and_the_next_sms_to_a_dead_number_is_suppressed(
    settings, live_server, sms_via_api: SmsApi, pipeline, make_registration
) -> None:
    from apps.notifications.services import notification_create
    from tests.notifications.conftest import context_for

    settings.PUBLIC_BASE_URL = live_server.url
    numbers = [f"+49151000000{index:02d}" for index in range(30)]
    dead = set(numbers[::5])  # six numbers the carrier does not know
    sms_via_api.undeliverable = dict.fromkeys(dead, 30005)

    def confirm(phones: list[str]) -> list[Notification]:
        created = []
        for number in phones:
            registration = make_registration(phone=number)
            notification = notification_create(
                registration=registration, kind="confirmation", channel="sms", context=context_for(registration)
            )
            assert notification is not None
            created.append(notification)
        return created

    def settle(created: list[Notification]) -> dict[str, str]:
        def settled() -> bool:
            # The scheduler's job (send_reminders): a callback that outran the worker's `sent` write waits for it.
            notification_reports_apply_pending()
            return not Notification.objects.filter(
                id__in=[n.id for n in created],
                status__in=[Status.PENDING, Status.SENDING, Status.RETRYING, Status.SENT],
            ).exists()

        wait_until(settled, timeout=60)
        sms_via_api.wait_for_callbacks()
        return dict(Notification.objects.filter(id__in=[n.id for n in created]).values_list("recipient", "status"))

    # When the carrier answers for each message through the stand-in's signed callbacks:
    statuses = settle(confirm(numbers))
    assert statuses == {number: Status.BOUNCED if number in dead else Status.DELIVERED for number in numbers}
    assert sorted(suppressed_numbers()) == sorted((number, "bounced") for number in dead)
    # Every callback was answered 2xx: two per message (sent, then the carrier's answer).
    assert len(sms_via_api.callback_answers) == 2 * len(numbers)
    assert {answer for _, _, answer in sms_via_api.callback_answers} == {204}

    # When second registrations confirm to every dead number and to three live ones:
    requests_before = len(sms_via_api.received)
    again = sorted(dead) + numbers[1:4]
    statuses = settle(confirm(again))
    assert statuses == {number: Status.SUPPRESSED if number in dead else Status.DELIVERED for number in again}
    # Then only the live numbers' messages reached the SMS API.
    assert sorted(form["To"] for form in sms_via_api.received[requests_before:]) == numbers[1:4]


@pytest.mark.django_db(transaction=True)
def test_with_the_database_unreachable_a_callback_gets_503_and_a_later_one_lands(
    client: Client, sent_sms: Callable[..., Notification]
) -> None:
    from django.db import connection

    from tests.support.polling import free_port

    notification = sent_sms()
    # Given this process's database connection points at a port nothing listens on (PostgreSQL
    # itself stays up for the other tests on this machine).
    real_port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        response = callback(client, notification, "delivered")
    finally:
        connection.close()
        connection.settings_dict["PORT"] = real_port
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    # When Twilio calls again with the database back: recorded.
    assert callback(client, notification, "delivered").status_code == 204
    notification.refresh_from_db()
    assert notification.status == Status.DELIVERED


@pytest.mark.parametrize("path", ["/sms/status/{id}/", "/anymail/mailgun/tracking/"])
def test_https_only_settings_do_not_redirect_the_providers_callbacks(
    settings, client: Client, sent_sms: Callable[..., Notification], path: str
) -> None:
    # A 301 would lose the POST: providers do not post again to the new location.
    from eventplatform.settings.base import https_only_settings

    for name, value in https_only_settings().items():
        setattr(settings, name, value)
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": "key", "WEBHOOK_SECRET": "user:password"}
    response = client.post(path.format(id=sent_sms().id), {})
    assert response.status_code not in (301, 302)
    assert client.post("/admin/login/", {}).status_code == 301  # while everything else is redirected


def test_callback_log_lines_carry_no_phone_number(
    client: Client, sent_sms: Callable[..., Notification], json_log: io.StringIO
) -> None:
    notification = sent_sms()
    callback(client, notification, "undelivered", error_code="30005")  # recorded, suppresses the number
    callback(client, uuid.uuid4(), "delivered")  # unmatched, logged as a warning
    callback(client, notification, "delivered", token="wrong")  # refused
    lines = json_log.getvalue()
    assert "sms.status_callback" in lines
    assert "provider_report_unmatched" in lines
    assert "invalid_provider_signature" in lines
    assert NUMBER not in lines
