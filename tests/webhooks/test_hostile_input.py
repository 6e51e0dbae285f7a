"""No input gets a 5xx (CONTRACT section 4): each hostile case seen in issue 8, and the header
oddities the contract's table does not name, answered with a 4xx and the error body.

Decisions (docs/webhooks.md, "Hostile input"):
- webhook-id must be 1-255 printable ASCII characters, webhook-timestamp 1-15 digits: anything
  else is a malformed signature header (401 invalid_signature).
- JSON beyond interoperable limits (nesting over 64, a number beyond a double, an integer over
  4300 digits, not UTF-8) is 400 malformed_json, nothing stored.
- Text jsonb cannot hold (NUL, lone surrogates) in a signed body: 422, kept as raw bytes.
- Content-Type is not checked: the signed body is what counts (a wrong header loses nothing).
"""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client

from apps.outbox.models import OutboxMessage
from apps.webhooks.models import Portal, WebhookEvent
from eventplatform.errors import CATALOGUE
from tests.support.webhooks import encode, payload, signed_headers

pytestmark = pytest.mark.django_db

URL = "/webhooks/pretix/"


def post(
    client: Client, body: bytes, headers: dict[str, str], *, content_type: str = "application/json", url: str = URL
):
    return client.post(
        url, data=body, content_type=content_type, headers={k: v for k, v in headers.items() if k != "content-type"}
    )


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and code in CATALOGUE and isinstance(error["message"], str)
    return error


def assert_nothing_stored() -> None:
    assert WebhookEvent.objects.count() == 0 and OutboxMessage.objects.count() == 0


def test_a_400_digit_timestamp_is_401_not_an_overflow(client: Client, portal: Portal) -> None:
    body = encode(payload())
    headers = signed_headers(body)
    headers["webhook-timestamp"] = "9" * 400
    assert_error(post(client, body, headers), 401, "invalid_signature")
    assert_nothing_stored()


@pytest.mark.parametrize("timestamp", ["+1700000000", "1_700_000_000", " 1700000000", "1.7e9", "-5", "١٢٣"])
def test_a_timestamp_that_is_not_plain_digits_is_401(client: Client, portal: Portal, timestamp: str) -> None:
    body = encode(payload())
    headers = signed_headers(body)
    headers["webhook-timestamp"] = timestamp
    assert_error(post(client, body, headers), 401, "invalid_signature")


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1" + "0" * 400 + ".5"])
def test_a_number_beyond_a_double_is_400_malformed_json(client: Client, portal: Portal, number: str) -> None:
    body = encode(payload())[:-1] + f', "amount": {number}}}'.encode()
    error = assert_error(post(client, body, signed_headers(body)), 400, "malformed_json")
    assert "double" in error["message"]
    assert_nothing_stored()


def test_an_integer_over_4300_digits_is_400(client: Client, portal: Portal) -> None:
    body = encode(payload())[:-1] + b', "amount": ' + b"7" * 5000 + b"}"
    assert_error(post(client, body, signed_headers(body)), 400, "malformed_json")
    assert_nothing_stored()


def test_a_400_digit_integer_is_stored_as_it_is(client: Client, portal: Portal) -> None:
    body = encode(payload())[:-1] + b', "amount": ' + b"7" * 400 + b"}"
    response = post(client, body, signed_headers(body))
    assert response.status_code == 202
    assert WebhookEvent.objects.get().payload["amount"] == int("7" * 400)


def test_json_nested_50000_deep_is_400_not_a_recursion_error(client: Client, portal: Portal) -> None:
    body = b'{"type": "registration.created", "data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    error = assert_error(post(client, body, signed_headers(body)), 400, "malformed_json")
    assert "nested" in error["message"]
    assert_nothing_stored()


def test_json_nested_65_deep_is_400_and_64_is_parsed(client: Client, portal: Portal) -> None:
    too_deep = b"[" * 65 + b"]" * 65
    assert_error(post(client, too_deep, signed_headers(too_deep)), 400, "malformed_json")
    deep_enough = b"[" * 64 + b"]" * 64
    assert_error(post(client, deep_enough, signed_headers(deep_enough)), 422, "invalid_payload")


def test_a_type_containing_nul_is_422_and_kept_as_raw_bytes(client: Client, portal: Portal) -> None:
    data = payload()
    data["type"] = "registration.created\x00"
    body = encode(data)
    error = assert_error(post(client, body, signed_headers(body)), 422, "invalid_payload")
    event = WebhookEvent.objects.get(id=error["details"]["event_id"])
    assert event.status == "rejected" and event.type == "" and event.payload is None
    assert bytes(event.raw_body) == body
    assert OutboxMessage.objects.count() == 0


def test_a_top_level_string_with_nul_is_422(client: Client, portal: Portal) -> None:
    body = b'"\\u0000"'
    assert_error(post(client, body, signed_headers(body)), 422, "invalid_payload")


def test_a_lone_surrogate_is_422(client: Client, portal: Portal) -> None:
    body = encode(payload())[:-1] + b', "note": "\\ud800"}'
    assert_error(post(client, body, signed_headers(body)), 422, "invalid_payload")


@pytest.mark.parametrize("body", [b"\xff\xfe{}", b"\xef\xbb\xbf{}", "{}".encode("utf-16"), b"NaN", b"[Infinity]"])
def test_bodies_that_are_not_utf8_json_are_400(client: Client, portal: Portal, body: bytes) -> None:
    assert_error(post(client, body, signed_headers(body)), 400, "malformed_json")
    assert_nothing_stored()


def test_an_empty_signed_body_is_400_and_unsigned_is_401(client: Client, portal: Portal) -> None:
    assert_error(post(client, b"", signed_headers(b"")), 400, "malformed_json")
    assert_error(post(client, b"", {}), 401, "invalid_signature")
    assert_nothing_stored()


@pytest.mark.parametrize("delivery_id", ["msg\x00nul", "msg_ünïcode", "x" * 256, "tab\tinside", ""])
def test_a_delivery_id_that_is_not_printable_ascii_is_401(client: Client, portal: Portal, delivery_id: str) -> None:
    body = encode(payload())
    headers = signed_headers(body)
    headers["webhook-id"] = delivery_id
    assert_error(post(client, body, headers), 401, "invalid_signature")
    assert_nothing_stored()


@pytest.mark.parametrize("value", ["v1,ÿÿÿ", "v1,\x00", "v1", "v1," + "A" * 5000, "ünïcödé", ",,,  ,"])
def test_odd_signature_headers_are_401(client: Client, portal: Portal, value: str) -> None:
    body = encode(payload())
    headers = signed_headers(body)
    headers["webhook-signature"] = value
    assert_error(post(client, body, headers), 401, "invalid_signature")


def test_a_signature_header_sent_twice_is_read_as_both(client: Client, portal: Portal) -> None:
    # Given what a WSGI server makes of two webhook-signature headers: joined with a comma
    body = encode(payload())
    headers = signed_headers(body)
    headers["webhook-signature"] = "v1,AAAA" + "," + headers["webhook-signature"]
    assert post(client, body, headers).status_code == 202


def test_a_delivery_id_sent_twice_is_401(client: Client, portal: Portal) -> None:
    body = encode(payload())
    headers = signed_headers(body, delivery_id="msg_1")
    headers["webhook-id"] = "msg_1,msg_1"  # joined by the server; the signature covers msg_1 only
    assert_error(post(client, body, headers), 401, "invalid_signature")


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=",
        "",
        "application/json; charset=latin-1",
    ],
)
def test_content_type_is_not_checked_the_signed_body_counts(client: Client, portal: Portal, content_type: str) -> None:
    body = encode(payload())
    response = post(client, body, signed_headers(body), content_type=content_type)
    assert response.status_code == 202


@pytest.mark.parametrize("slug", ["no.such", "x" * 300, "ünï", "a%00b"])
def test_slugs_that_cannot_be_portals_are_404_with_the_error_body(client: Client, portal: Portal, slug: str) -> None:
    assert_error(client.post(f"/webhooks/{slug}/", data=b"{}", content_type="application/json"), 404, "unknown_portal")


@pytest.mark.parametrize("path", ["/webhooks/", "/webhooks/pretix", "/webhooks/pretix/extra/", "/webhooks/a/b/c"])
def test_other_paths_under_webhooks_are_404_with_the_error_body(client: Client, portal: Portal, path: str) -> None:
    assert_error(client.post(path, data=b"{}", content_type="application/json"), 404, "unknown_portal")


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch", "options", "head"])
def test_other_methods_are_405_with_allow(client: Client, portal: Portal, method: str) -> None:
    response = getattr(client, method)(URL)
    assert response.status_code == 405 and response["Allow"] == "POST"
    if method != "head":
        assert response.json()["error"]["code"] == "method_not_allowed"


def test_a_chunked_body_under_runserver_like_servers_is_411(portal: Portal) -> None:
    # Given a server that cannot decode chunked bodies (no wsgi.input_terminated), like runserver
    body = encode(payload())
    headers = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in signed_headers(body).items() if k != "content-type"}
    response = Client().generic(
        "POST", URL, data=b"", content_type="application/json", HTTP_TRANSFER_ENCODING="chunked", **headers
    )
    assert_error(response, 411, "length_required")


def test_timestamps_at_the_edges_of_the_tolerance(client: Client, portal: Portal) -> None:
    body = encode(payload())
    assert post(client, body, signed_headers(body, timestamp=int(time.time()) - 250)).status_code == 202
    body = encode(payload("R-2"))
    assert_error(post(client, body, signed_headers(body, timestamp=0)), 401, "timestamp_out_of_tolerance")
    body = encode(payload("R-3"))
    assert_error(post(client, body, signed_headers(body, timestamp=10**15 - 1)), 401, "timestamp_out_of_tolerance")


def test_error_bodies_are_json_objects_with_code_and_message(client: Client, portal: Portal) -> None:
    response = client.post(URL, data=b"x", content_type="application/json")
    assert set(json.loads(response.content)["error"]) >= {"code", "message"}
