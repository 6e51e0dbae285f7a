"""Standard Webhooks signature verification (https://www.standardwebhooks.com/).

Why not `standardwebhooks.Webhook.verify`: its tolerance is fixed at five minutes, it checks one
secret at a time, and a malformed signature entry raises ValueError rather than a verification
error. This is the same algorithm in a few lines, tested against that package's `sign`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping

from eventplatform.errors import EventPlatformError


class InvalidSignature(EventPlatformError):
    """Signature headers are missing or malformed, or no signature matches."""

    code = "invalid_signature"


class TimestampOutOfTolerance(EventPlatformError):
    """webhook-timestamp is too far from our clock."""

    code = "timestamp_out_of_tolerance"


def secret_key(secret: str) -> bytes:
    """The HMAC key: the base64-decoded part after `whsec_`."""
    return base64.b64decode(secret.removeprefix("whsec_"), validate=False)


def sign(*, secret: str, delivery_id: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret_key(secret), f"{delivery_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    *, headers: Mapping[str, str], body: bytes, secrets: Iterable[str], tolerance_seconds: int, now: float | None = None
) -> tuple[str, int]:
    """Return (delivery_id, timestamp) when any v1 signature matches any secret; raise otherwise."""
    delivery_id = headers.get("webhook-id", "")
    timestamp_header = headers.get("webhook-timestamp", "")
    signature_header = headers.get("webhook-signature", "")
    if not (delivery_id and timestamp_header and signature_header):
        raise InvalidSignature("Missing webhook-id, webhook-timestamp or webhook-signature header.")
    try:
        timestamp = int(timestamp_header)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not unix seconds.") from None
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_seconds:
        raise TimestampOutOfTolerance(
            f"webhook-timestamp is more than {tolerance_seconds} s away from the server clock."
        )
    candidates = []
    for entry in signature_header.split():
        version, _, value = entry.partition(",")
        if version != "v1":
            continue
        try:
            candidates.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    if candidates:
        signed = f"{delivery_id}.{timestamp_header}.".encode() + body
        for secret in secrets:
            expected = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
            if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
                return delivery_id, timestamp
    raise InvalidSignature("No signature matches an active secret of this portal.")
