"""One normal form for e-mail addresses and phone numbers: what is validated is what is stored,
sent to, erased and (later) suppressed.

E-mail: surrounding whitespace (spaces, tabs, CR, LF) removed and the domain lower-cased. The
local part is kept as given: RFC 5321 section 2.4 lets the receiving server treat it as
case-sensitive, so lower-casing it could deliver to someone else; lookups that must match
whatever the case (erasure, suppression) compare case-insensitively (`email_key`).

Phone: E.164 with nothing else: whitespace anywhere and the visual separators of E.123 notation
(`-`, `.`, `(`, `)`) removed, so "+49 151 1234-5678\\n" is "+4915112345678". Whether the result is
E.164 is the schema's business (serializers.E164).
"""

from __future__ import annotations

import re

_PHONE_NOISE = re.compile(r"[\s\-.()]")


def normalise_email(value: str) -> str:
    address = (value or "").strip()
    local, at, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}" if at else address


def email_key(value: str) -> str:
    """The address as compared for identity (erasure, suppression): normalised and lower-cased."""
    return normalise_email(value).lower()


def normalise_phone(value: str | None) -> str:
    return _PHONE_NOISE.sub("", value or "")
