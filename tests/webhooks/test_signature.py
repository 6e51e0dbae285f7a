from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.webhooks import signature
from tests.support.webhooks import SECRET, signed_headers

OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
BODY = b'{"type": "registration.created"}'


def verify(headers: dict[str, str], body: bytes = BODY, secrets: tuple[str, ...] = (SECRET,), **kwargs: object):
    return signature.verify(headers=headers, body=body, secrets=secrets, tolerance_seconds=300, **kwargs)


def test_valid_signature_passes() -> None:
    headers = signed_headers(BODY, delivery_id="msg_1")
    assert verify(headers)[0] == "msg_1"


def test_wrong_secret_fails() -> None:
    with pytest.raises(signature.InvalidSignature):
        verify(signed_headers(BODY, secret=OTHER_SECRET))


def test_any_active_secret_passes_during_rotation() -> None:
    headers = signed_headers(BODY, secret=OTHER_SECRET)
    assert verify(headers, secrets=(SECRET, OTHER_SECRET))


def test_one_valid_signature_among_several_passes() -> None:
    headers = signed_headers(BODY)
    headers["webhook-signature"] = "v1,AAAA v2,whatever " + headers["webhook-signature"]
    assert verify(headers)


def test_tampered_body_fails() -> None:
    headers = signed_headers(BODY)
    with pytest.raises(signature.InvalidSignature):
        verify(headers, body=BODY.replace(b"created", b"cancelled"))


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_fails(missing: str) -> None:
    headers = signed_headers(BODY)
    del headers[missing]
    with pytest.raises(signature.InvalidSignature):
        verify(headers)


@pytest.mark.parametrize("value", ["garbage", "v1", "v1,", "v1,!!!notbase64", "", "v0,abc"])
def test_malformed_signature_fails_cleanly(value: str) -> None:
    headers = signed_headers(BODY)
    headers["webhook-signature"] = value
    with pytest.raises(signature.InvalidSignature):
        verify(headers)


@pytest.mark.parametrize("offset", [-301, 301, -100_000])
def test_timestamp_outside_tolerance_fails(offset: int) -> None:
    now = int(time.time())
    headers = signed_headers(BODY, timestamp=now + offset)
    with pytest.raises(signature.TimestampOutOfTolerance):
        verify(headers, now=now)


@pytest.mark.parametrize("offset", [-299, 0, 299])
def test_timestamp_inside_tolerance_passes(offset: int) -> None:
    now = int(time.time())
    assert verify(signed_headers(BODY, timestamp=now + offset), now=now)


def test_non_numeric_timestamp_fails() -> None:
    headers = signed_headers(BODY)
    headers["webhook-timestamp"] = "yesterday"
    with pytest.raises(signature.InvalidSignature):
        verify(headers)


@given(body=st.binary(max_size=512), delivery_id=st.text(alphabet="abcdefghij_-0123456789", min_size=1, max_size=40))
def test_our_sign_matches_standardwebhooks_for_any_body(body: bytes, delivery_id: str) -> None:
    # Given any body, our signer and the reference package must agree (for UTF-8 bodies it can sign).
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return
    headers = signed_headers(text.encode(), delivery_id=delivery_id)
    ours = signature.sign(
        secret=SECRET, delivery_id=delivery_id, timestamp=int(headers["webhook-timestamp"]), body=text.encode()
    )
    assert ours == headers["webhook-signature"]
