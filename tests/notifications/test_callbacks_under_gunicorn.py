"""The providers' callbacks under a real gunicorn, black-box from CONTRACT section 8 (SMS status
callbacks, anymail's ESP tracking webhooks): Twilio's signature over PUBLIC_BASE_URL as an operator
writes it (a trailing slash), with a query string and repeated fields, and hostile input — garbage,
huge and malformed bodies, wrong methods, bad auth — each a 4xx with the error body, never a 5xx."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import pytest
from django.utils import timezone

from apps.notifications.models import Notification, Suppression
from tests.support.processes import ManagedProcess, process_env, start_web

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BASE = "https://events.example.com"
TOKEN = "twilio-auth-token-for-tests"
BASIC_AUTH = "anymail:webhook-password"
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(scope="module")
def web(django_db_setup, django_db_blocker) -> Iterator[tuple[ManagedProcess, str]]:
    """One gunicorn for the module, PUBLIC_BASE_URL written with a trailing slash."""
    with django_db_blocker.unblock():
        env = process_env(
            PUBLIC_BASE_URL=BASE + "/",
            SMS_AUTH_TOKEN=TOKEN,
            ANYMAIL_WEBHOOK_SECRET=BASIC_AUTH,
            ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY="key-mailgun-webhook-signing",
        )
    process, base_url = start_web(env, workers=1)
    yield process, base_url
    process.stop()
    assert "Traceback" not in process.output(), process.output(tail=4000)


def twilio_signature(url: str, fields: list[tuple[str, str]]) -> str:
    """Twilio's published algorithm, written from its documentation: the full URL, then each field's
    name and value, sorted by name (values of a repeated name sorted too), HMAC-SHA1, base64."""
    data = url + "".join(name + value for name, value in sorted(fields))
    return base64.b64encode(hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest()).decode()


def request(
    base_url: str, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    parsed = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Content-Length": str(len(body)), **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def sms_callback(
    base_url: str, notification_id: str, fields: list[tuple[str, str]], *, query: str = "", signed_url: str = ""
) -> tuple[int, dict[str, str], bytes]:
    path = f"/sms/status/{notification_id}/" + (f"?{query}" if query else "")
    signature = twilio_signature(signed_url or BASE + path, fields)
    body = urllib.parse.urlencode(fields).encode()
    return request(base_url, "POST", path, body, {"Content-Type": FORM, "X-Twilio-Signature": signature})


@pytest.fixture
def sent_sms(make_notification: Callable[..., Notification]) -> Callable[[], Notification]:
    """An SMS notification as the worker leaves it after Twilio's API accepted it, committed."""

    def make() -> Notification:
        notification = make_notification(channel="sms")
        Notification.objects.filter(id=notification.id).update(
            status=Notification.Status.SENT, sent_at=timezone.now(), provider_message_id="SM" + uuid.uuid4().hex
        )
        notification.refresh_from_db()
        return notification

    return make


def error_code(status: int, body: bytes) -> str:
    assert 400 <= status < 500, (status, body[:300])
    return json.loads(body)["error"]["code"]


def status_of(notification: Notification) -> str:
    notification.refresh_from_db()
    return notification.status


# --- Twilio's signature over PUBLIC_BASE_URL -------------------------------------------------------


def test_a_signed_callback_counts_though_public_base_url_ends_in_a_slash(web, sent_sms) -> None:
    _, base_url = web
    notification = sent_sms()
    fields = [("MessageSid", notification.provider_message_id), ("MessageStatus", "delivered")]
    status, _, _ = sms_callback(base_url, str(notification.id), fields)
    assert status in (200, 204)
    assert status_of(notification) == "delivered"


def test_the_query_string_twilio_called_is_part_of_what_is_signed(web, sent_sms) -> None:
    _, base_url = web
    notification = sent_sms()
    fields = [("MessageSid", notification.provider_message_id), ("MessageStatus", "delivered")]
    # Signed without the query the request carries: refused, nothing changes
    path = f"/sms/status/{notification.id}/"
    status, _, body = sms_callback(base_url, str(notification.id), fields, query="a=1&b=2", signed_url=BASE + path)
    assert (status, error_code(status, body)) == (403, "invalid_provider_signature")
    assert status_of(notification) == "sent"
    # Signed over the full URL, query included: counts
    status, _, _ = sms_callback(base_url, str(notification.id), fields, query="a=1&b=2")
    assert status in (200, 204)
    assert status_of(notification) == "delivered"


def test_repeated_form_fields_are_signed_each_value_and_the_callback_counts(web, sent_sms) -> None:
    _, base_url = web
    notification = sent_sms()
    fields = [
        ("MessageSid", notification.provider_message_id),
        ("MessageStatus", "undelivered"),
        ("ErrorCode", "30005"),
        ("Tag", "b"),
        ("Tag", "a"),
    ]
    status, _, _ = sms_callback(base_url, str(notification.id), fields)
    assert status in (200, 204)
    assert status_of(notification) == "bounced"
    assert Suppression.objects.filter(channel="sms", address=notification.recipient, lifted_at=None).count() == 1


def test_a_signed_callback_for_an_unknown_message_is_2xx_or_404(web) -> None:
    _, base_url = web
    fields = [("MessageSid", "SM" + uuid.uuid4().hex), ("MessageStatus", "delivered")]
    status, _, _ = sms_callback(base_url, str(uuid.uuid4()), fields)
    assert status in (200, 204, 404)


# --- hostile input: a 4xx with the error body, never a 5xx -----------------------------------------

NOT_AN_ID = "not-a-notification-id"


@pytest.mark.parametrize(
    ("method", "path", "headers", "body", "expected"),
    [
        ("GET", "/sms/status/{id}/", {}, b"", (405, "method_not_allowed")),
        ("PUT", "/sms/status/{id}/", {"Content-Type": FORM}, b"MessageStatus=delivered", (405, "method_not_allowed")),
        (
            "POST",
            "/sms/status/{id}/",
            {"Content-Type": FORM},
            b"MessageStatus=delivered",
            (403, "invalid_provider_signature"),
        ),
        (
            "POST",
            "/sms/status/{id}/",
            {"Content-Type": FORM, "X-Twilio-Signature": "bm90IGl0"},
            b"\xff\xfe\x00garbage=%ZZ&&==&\x80",
            (403, "invalid_provider_signature"),
        ),
        (
            "POST",
            "/sms/status/{id}/",
            {"Content-Type": "multipart/form-data; boundary=x", "X-Twilio-Signature": "bm90IGl0"},
            b"--y\r\nnot multipart at all",
            (403, "invalid_provider_signature"),
        ),
        (
            "POST",
            "/sms/status/{id}/",
            {"Content-Type": FORM, "X-Twilio-Signature": "bm90IGl0"},
            b"MessageStatus=" + b"x" * 3_000_000,
            (400, "bad_request"),
        ),
        (
            "POST",
            "/sms/status/{id}/",
            {"Content-Type": FORM, "X-Twilio-Signature": "bm90IGl0"},
            b"&".join(b"f%d=1" % i for i in range(5000)),
            (400, "bad_request"),
        ),
        (
            "POST",
            "/sms/status/{id}/",
            {"Content-Type": FORM + "; charset=latin-1", "X-Twilio-Signature": "bm90IGl0"},
            b"MessageStatus=d\xe9livered",
            (400, "bad_request"),
        ),
        ("POST", f"/sms/status/{NOT_AN_ID}/", {"Content-Type": FORM}, b"MessageStatus=delivered", (404, "not_found")),
        (
            "POST",
            "/anymail/mailgun/tracking/",
            {"Content-Type": "application/json"},
            b"{}",
            (400, "esp_webhook_refused"),
        ),
        (
            "POST",
            "/anymail/mailgun/tracking/",
            {
                "Content-Type": "application/json",
                "Authorization": "Basic " + base64.b64encode(b"anymail:wrong").decode(),
            },
            b"{}",
            (400, "esp_webhook_refused"),
        ),
        (
            "POST",
            "/anymail/mailgun/tracking/",
            {
                "Content-Type": "application/json",
                "Authorization": "Basic " + base64.b64encode(BASIC_AUTH.encode()).decode(),
            },
            b"\xff not json {",
            (400, "esp_webhook_refused"),
        ),
        (
            "POST",
            "/anymail/mailgun/tracking/",
            {
                "Content-Type": "application/json",
                "Authorization": "Basic " + base64.b64encode(BASIC_AUTH.encode()).decode(),
            },
            b'{"signature": {"timestamp": "1", "token": "t", "signature": "00"}, "event-data": {}}',
            (400, "esp_webhook_refused"),
        ),
        ("GET", "/anymail/mailgun/tracking/", {}, b"", (405, "method_not_allowed")),
    ],
    ids=[
        "sms-get",
        "sms-put",
        "sms-unsigned",
        "sms-garbage-body",
        "sms-broken-multipart",
        "sms-huge-body",
        "sms-too-many-fields",
        "sms-form-not-utf8",
        "sms-path-not-an-id",
        "anymail-no-auth",
        "anymail-wrong-auth",
        "anymail-garbage-body",
        "anymail-forged-signature",
        "anymail-get",
    ],
)
def test_hostile_input_gets_a_4xx_with_the_error_body(web, method, path, headers, body, expected) -> None:
    _, base_url = web
    status, response_headers, content = request(base_url, method, path.format(id=uuid.uuid4()), body, headers)
    expected_status, expected_code = expected
    assert status == expected_status, (status, content[:300])
    assert response_headers.get("content-type", "").startswith("application/json"), content[:300]
    assert error_code(status, content) == expected_code
