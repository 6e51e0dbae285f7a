"""Fuzzing the intake (issue 8 part 6): random headers and bodies through the real view and
PostgreSQL, bounded (400 examples, about 10 s).

Inputs: the three webhook headers with random, partly valid values (a fresh or stale or absurd
timestamp, a plausible or hostile id, a correct, random or garbled signature), other headers
(content types, transfer encodings, junk names), and bodies of random bytes, random JSON, valid
payloads, payloads with fields mutated or deleted, and byte-level tweaks (1e400, NUL, deep nesting,
truncation). Some are correctly signed. The view cannot tell fuzz from a portal.

Invariants:
- never a 5xx;
- every 4xx is JSON `{"error": {"code", "message"}}` with a code from the catalogue whose status it is;
- unsigned or wrongly signed input is 401 and stores nothing (no WebhookEvent, no OutboxMessage);
- a correctly signed delivery is stored at most once: 202 adds one accepted event and one outbox
  row, 422 one rejected event and no outbox row, 400 nothing; a repeat of a stored id adds nothing;
- a correctly signed valid payload is 202 (or 200 when its id was stored already).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import time
from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from apps.outbox.models import OutboxMessage
from apps.webhooks.models import Portal, WebhookEvent
from eventplatform.errors import CATALOGUE
from tests.support.webhooks import SECRET, encode, payload, signed_headers

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))
_unique = itertools.count()
DELETE = object()
PATHS = [
    ("type",),
    ("timestamp",),
    ("data",),
    ("data", "registration_id"),
    ("data", "event"),
    ("data", "event", "id"),
    ("data", "event", "name"),
    ("data", "event", "starts_at"),
    ("data", "event", "timezone"),
    ("data", "event", "venue"),
    ("data", "attendee"),
    ("data", "attendee", "email"),
    ("data", "attendee", "phone"),
    ("data", "attendee", "first_name"),
    ("data", "attendee", "role"),
    ("data", "attendee", "locale"),
    ("extra",),
]
HOSTILE_TEXT = st.sampled_from(
    [
        "\x00",
        "registration.created\x00",
        "\ud800",
        "é" * 300,
        "x" * 5000,
        "",
        "registration.cancelled",
        "registration.updated",
        "speaker",
        "+4915112345678",
        "Europe/Berlin",
        "Mars/Olympus",
        "2026-13-45T99:00:00Z",
        "ada@example.org",
    ]
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
    HOSTILE_TEXT,
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15,
)


def mutate(mutations: list[tuple[tuple[str, ...], Any]], registration_id: int) -> bytes:
    data = payload(f"R-FZ-{registration_id}")
    for path, value in mutations:
        target = data
        for key in path[:-1]:
            if not isinstance(target, dict) or not isinstance(target.get(key), dict):
                break
            target = target[key]
        else:
            if value is DELETE:
                target.pop(path[-1], None)
            else:
                target[path[-1]] = copy.deepcopy(value)
    return json.dumps(data).encode()


def tweak(body: bytes, how: str, position: int) -> bytes:
    position %= max(len(body), 1)
    if how == "truncate":
        return body[:position]
    if how == "flip":
        return body[:position] + bytes([body[position] ^ 0xFF]) + body[position + 1 :] if body else body
    if how == "nul":
        return body[:position] + b"\x00" + body[position:]
    if how == "huge_number":
        return body[:-1] + b', "n": 1e400}'
    if how == "deep":
        return body[:-1] + b', "n": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    if how == "bom":
        return b"\xef\xbb\xbf" + body
    return body + b"\n"


valid_bodies = st.integers(min_value=0, max_value=10**9).map(lambda n: encode(payload(f"R-FZ-{n}")))
bodies = st.one_of(
    valid_bodies,
    st.binary(max_size=600),
    json_values.map(lambda value: json.dumps(value).encode()),
    valid_bodies,
    st.builds(
        mutate,
        st.lists(st.tuples(st.sampled_from(PATHS), st.one_of(json_values, st.just(DELETE))), min_size=1, max_size=3),
        st.integers(min_value=0, max_value=10**9),
    ),
    st.builds(
        tweak,
        valid_bodies,
        st.sampled_from(["truncate", "flip", "nul", "huge_number", "deep", "bom", "newline"]),
        st.integers(min_value=0, max_value=10**4),
    ),
)
header_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x2FF), max_size=60)
fresh_ids = st.uuids().map(lambda u: f"msg_{u.hex}")
delivery_ids = st.one_of(fresh_ids, header_text, st.just("x" * 256))
timestamp_offsets = st.one_of(st.integers(min_value=-250, max_value=250), st.integers(), st.just(10**400))
drops = st.sets(st.sampled_from(["id", "timestamp"]))
other_headers = st.dictionaries(
    st.sampled_from(
        [
            "x-junk",
            "transfer-encoding",
            "content-encoding",
            "accept",
            "x-forwarded-for",
            "webhook-version",
            "authorization",
        ]
    ),
    st.one_of(header_text, st.sampled_from(["chunked", "gzip", "identity", "*/*"])),
    max_size=3,
)
content_types = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=utf-16",
    ]
)
signature_kinds = st.sampled_from(["correct", "correct", "correct", "missing", "random", "garbled", "other_secret"])


def signature_for(kind: str, body: bytes, delivery_id: str, timestamp: str, junk: str) -> str | None:
    if kind == "missing":
        return None
    if kind == "random":
        return junk
    try:
        ts = int(timestamp)
        secret = SECRET if kind != "other_secret" else "whsec_" + "b3RoZXItc2VjcmV0LWtleS1ieXRlcw=="
        signature = signed_headers(body, secret=secret, delivery_id=delivery_id, timestamp=ts)["webhook-signature"]
    except (ValueError, OverflowError):
        return junk
    return signature[:-3] + "AAA" if kind == "garbled" else signature


def assert_error_body(response) -> str:
    assert response["Content-Type"] == "application/json", response.content[:200]
    error = json.loads(response.content)["error"]
    assert isinstance(error["message"], str)
    assert error["code"] in CATALOGUE and CATALOGUE[error["code"]].http_status == response.status_code, error
    return error["code"]


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    body=bodies,
    delivery_id=delivery_ids,
    offset=timestamp_offsets,
    timestamp_junk=header_text,
    signature_kind=signature_kinds,
    signature_junk=header_text,
    drop=drops,
    slug=st.sampled_from(["pretix"] * 9 + ["nobody"]),
    extra=other_headers,
    content_type=content_types,
    junk_timestamp=st.booleans(),
    well_signed=st.booleans(),
    fresh_id=fresh_ids,
    repeat_id=st.sampled_from([True, False, False, False]),
)
def test_random_input_never_gets_a_5xx_and_stores_only_signed_deliveries(
    client: Client,
    portal: Portal,
    body: bytes,
    delivery_id: str,
    offset: int,
    timestamp_junk: str,
    signature_kind: str,
    signature_junk: str,
    drop: set[str],
    slug: str,
    extra: dict[str, str],
    content_type: str,
    junk_timestamp: bool,
    well_signed: bool,
    fresh_id: str,
    repeat_id: bool,
) -> None:
    if well_signed:  # half the examples: every header right, so that the body is what is fuzzed
        # mostly a new id; sometimes one hypothesis drew before (the duplicate path)
        delivery_id = fresh_id if repeat_id else f"{fresh_id}_{next(_unique)}"
        drop, junk_timestamp, signature_kind = set(), False, "correct"
        offset = offset % 500 - 250 if abs(offset) < 10**300 else 0
    timestamp = timestamp_junk if junk_timestamp else str(int(time.time()) + offset)
    signature = signature_for(signature_kind, body, delivery_id, timestamp, signature_junk)
    headers = dict(extra)
    if "id" not in drop:
        headers["webhook-id"] = delivery_id
    if "timestamp" not in drop:
        headers["webhook-timestamp"] = timestamp
    if signature is not None:
        headers["webhook-signature"] = signature
    events_before, outbox_before = WebhookEvent.objects.count(), OutboxMessage.objects.count()
    # (PostgreSQL cannot even compare text with NUL; the intake refuses such ids before any query)
    already_stored = (
        "\x00" not in delivery_id and WebhookEvent.objects.filter(portal=portal, delivery_id=delivery_id).exists()
    )

    # generic(): the body goes out as these bytes (post() would re-encode it for a charset= parameter)
    response = client.generic("POST", f"/webhooks/{slug}/", data=body, content_type=content_type, headers=headers)

    status = response.status_code
    event(f"status {status}")  # the spread shows with --hypothesis-show-statistics
    assert status < 500, response.content[:300]
    code = assert_error_body(response) if status >= 400 else None
    new_events = WebhookEvent.objects.count() - events_before
    new_outbox = OutboxMessage.objects.count() - outbox_before
    correctly_signed = (
        signature_kind == "correct"
        and signature != signature_junk
        and not drop
        and not junk_timestamp
        and abs(offset) <= 250
        and slug == "pretix"
        and delivery_id.isascii()
        and delivery_id.isprintable()
        and 0 < len(delivery_id) <= 255
    )
    if status == 411:
        # `Transfer-Encoding: chunked` without a length, which this server (the test client, like
        # runserver) cannot decode: refused before anything is read, signed or not.
        assert "chunked" in headers.get("transfer-encoding", "").lower() and code == "length_required"
        assert (new_events, new_outbox) == (0, 0)
        return
    if not correctly_signed:
        assert status in (401, 404), (status, code)
        assert (new_events, new_outbox) == (0, 0)
        return
    assert status in (200, 202, 400, 422), (status, code)
    if status == 202:
        assert not already_stored and (new_events, new_outbox) == (1, 1)
        assert WebhookEvent.objects.get(portal=portal, delivery_id=delivery_id).status == "accepted"
    elif status == 422 and not already_stored:
        assert (new_events, new_outbox) == (1, 0)
        assert WebhookEvent.objects.get(portal=portal, delivery_id=delivery_id).status == "rejected"
    else:
        assert (new_events, new_outbox) == (0, 0)
    if status == 200 or already_stored:  # a stored id: its event is answered again, or the new body is refused
        assert status in (200, 400, 422) and (new_events, new_outbox) == (0, 0)
    try:
        valid = json.loads(body) == json.loads(encode(payload(json.loads(body)["data"]["registration_id"])))
    except (ValueError, KeyError, TypeError, RecursionError):
        valid = False
    if valid:
        assert status in (200, 202)
