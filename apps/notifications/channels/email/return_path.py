"""The e-mail return path (CONTRACT section 8): `bounces+TOKEN@bounces.example.com`, VERP with a MAC.

Every e-mail's envelope sender (MAIL FROM) names its notification, so a delivery status
notification, which goes to the envelope sender, tells us which message it is about without
reading its text. The token carries a MAC keyed from SECRET_KEY, as BATV does: a report for a
notification whose id is all someone knows (the `X-Eventplatform-Notification-Id` header of a
message they received) is refused, because they cannot compute the MAC.

TOKEN = base32(notification uuid, 16 bytes) + base32(HMAC-SHA256, first 10 bytes), lower case,
no padding: 26 + 16 = 42 characters of [a-z2-7]. Base32 rather than base64 because MTAs may
change the case of a local part; hex would make it 52. The local part (`bounces+` and the token)
stays under RFC 5321's 64 octets, and the token needs no xtext escaping as ENVID. 80 bits of MAC:
a forger has one guess per SMTP transaction, and each wrong guess counts nothing.

The MAC key is derived for this one purpose (Django's salted_hmac with its own salt), so a MAC of
ours never serves as anything else. Rotating SECRET_KEY: put the old one in SECRET_KEY_FALLBACKS
until the bounces of mail sent before the rotation have arrived (a few days: docs/deploy.md).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import uuid

from django.conf import settings
from django.utils.crypto import salted_hmac

_SALT = "eventplatform.notifications.email.return_path"
_ID_CHARS = 26  # base32 of 16 bytes, without padding
_MAC_BYTES = 10
_MAC_CHARS = 16  # base32 of 10 bytes
TOKEN_LENGTH = _ID_CHARS + _MAC_CHARS


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def _mac(notification_id: uuid.UUID, secret: str) -> str:
    digest = salted_hmac(_SALT, notification_id.hex, secret=secret, algorithm="sha256").digest()
    return _b32(digest[:_MAC_BYTES])


def return_path_token(notification_id: uuid.UUID | str) -> str:
    """The token naming this notification, with its MAC under the current SECRET_KEY."""
    notification_id = uuid.UUID(str(notification_id))
    return _b32(notification_id.bytes) + _mac(notification_id, settings.SECRET_KEY)


def token_verify(token: str) -> uuid.UUID | None:
    """The notification a token names, or None when it is malformed or its MAC does not verify
    under SECRET_KEY or one of SECRET_KEY_FALLBACKS (compared in constant time)."""
    token = token.strip().lower()
    if len(token) != TOKEN_LENGTH:
        return None
    try:
        notification_id = uuid.UUID(bytes=base64.b32decode(token[:_ID_CHARS].upper() + "======"))
    except (binascii.Error, ValueError):
        return None
    given = token[_ID_CHARS:].encode("ascii", "replace")
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    # Every key is tried, so the time taken does not say which matched.
    matched = [hmac.compare_digest(given, _mac(notification_id, secret).encode("ascii")) for secret in secrets]
    return notification_id if any(matched) else None


def _split(address: str) -> tuple[str, str]:
    local, _, domain = address.strip().strip("<>").rpartition("@")
    return local.lower(), domain.lower()


def return_path_address(notification_id: uuid.UUID | str) -> str | None:
    """`local+TOKEN@domain` from EMAIL_BOUNCE_ADDRESS; None when bounce tracking is off (unset)."""
    if not settings.EMAIL_BOUNCE_ADDRESS:
        return None
    local, domain = _split(settings.EMAIL_BOUNCE_ADDRESS)
    return f"{local}+{return_path_token(notification_id)}@{domain}"


def bounce_address_token(address: str) -> str | None:
    """For an address at the bounce mailbox: its token ("" for the plain bounce address itself);
    None for any other address. Compared case-insensitively, as MTAs may change the case. The
    token is returned unverified (token_verify decides)."""
    if not settings.EMAIL_BOUNCE_ADDRESS:
        return None
    base_local, base_domain = _split(settings.EMAIL_BOUNCE_ADDRESS)
    local, domain = _split(address)
    if domain != base_domain:
        return None
    if local == base_local:
        return ""
    prefix = f"{base_local}+"
    return local[len(prefix) :] if local.startswith(prefix) else None


def address_notification(address: str) -> uuid.UUID | None:
    """The notification named by a return-path address of ours whose token verifies, else None."""
    token = bounce_address_token(address)
    return token_verify(token) if token else None


def xtext(value: str) -> str:
    """RFC 3461 section 4: xtext, for ENVID and ORCPT values (`+`, `=`, controls and non-ASCII as
    `+XX`)."""
    return "".join(
        char if 33 <= ord(char) <= 126 and char not in "+=" else "".join(f"+{byte:02X}" for byte in char.encode())
        for char in value
    )
