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
import re
import time
from collections.abc import Iterable, Mapping

from eventplatform.errors import EventPlatformError


class InvalidSignature(EventPlatformError):
    """Signature headers are missing or malformed, or no signature matches."""

    code = "invalid_signature"


class TimestampOutOfTolerance(EventPlatformError):
    """webhook-timestamp is too far from our clock."""

    code = "timestamp_out_of_tolerance"


# Standard Webhooks ids and timestamps are ASCII. Anything else (NUL, latin-1 bytes a server
# decoded, `+1_700_000_000`, a 400-digit number that overflows a float) is a malformed header:
# 401 before it reaches arithmetic or the database.
DELIVERY_ID = re.compile(r"[\x20-\x7e]{1,255}")
TIMESTAMP = re.compile(r"[0-9]{1,15}")


SECRET_MAX_LENGTH = 200  # PortalSecret.secret's column
SECRET_MIN_KEY_BYTES = 16


def validate_secret(secret: str) -> bytes:
    """The one check of a signing secret, wherever one comes from (create_portal, the admin, a
    rotation): `whsec_`, then strict base64 of at least 16 key bytes. Returns the key; raises
    ValueError with a message fit for the person who typed it. The message never repeats the secret."""
    if not secret.startswith("whsec_"):
        raise ValueError("A secret must look like whsec_<base64>.")
    if len(secret) > SECRET_MAX_LENGTH:
        raise ValueError(f"A secret is at most {SECRET_MAX_LENGTH} characters.")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("The part after whsec_ must be base64.") from None
    if len(key) < SECRET_MIN_KEY_BYTES:
        raise ValueError(f"A secret must hold at least {SECRET_MIN_KEY_BYTES} key bytes.")
    return key


def mask_secret(secret: str) -> str:
    """What staff see of a secret once it exists: enough to tell two apart, never enough to sign."""
    if len(secret) < 16:
        return "whsec_…"
    return f"{secret[:10]}…{secret[-4:]}"


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
    if not DELIVERY_ID.fullmatch(delivery_id):
        raise InvalidSignature("webhook-id must be 1 to 255 printable ASCII characters.")
    if not TIMESTAMP.fullmatch(timestamp_header):
        raise InvalidSignature("webhook-timestamp is not unix seconds.")
    timestamp = int(timestamp_header)
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_seconds:
        raise TimestampOutOfTolerance(
            f"webhook-timestamp is more than {tolerance_seconds} s away from the server clock."
        )
    candidates = _v1_signatures(signature_header)
    if candidates:
        signed = f"{delivery_id}.{timestamp_header}.".encode() + body
        for secret in secrets:
            expected = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
            if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
                return delivery_id, timestamp
    raise InvalidSignature("No signature matches an active secret of this portal.")


def _v1_signatures(header: str) -> list[bytes]:
    """The decoded v1 signatures of a header: `v1,<b64> v1,<b64>`, and also `v1,<b64>,v1,<b64>`,
    which is what a WSGI server makes of the header sent twice (it joins repeats with a comma).
    Other versions (v1a, asymmetric) and undecodable values are skipped, not errors."""
    tokens = [token for token in re.split(r"[\s,]+", header) if token]
    candidates = []
    for version, value in zip(tokens, tokens[1:], strict=False):
        if version != "v1":
            continue
        try:
            candidates.append(base64.b64decode(value, validate=True))
        except (binascii.Error, ValueError):
            continue
    return candidates
