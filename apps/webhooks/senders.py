"""A portal's own sender (CONTRACT section 9): its From, Reply-To and SMS sender id, parsed once.

Each `parse_*` takes what a person typed (admin form, `create_portal`) and returns the one normal
form that is stored and sent, or raises ValueError with a sentence they can act on. The model's
validators and the admin form call the same functions, so the two cannot disagree.

The From address must be on a domain of EMAIL_SENDER_DOMAINS (the domains our SPF and DKIM cover):
mail "from" anyone else's domain would fail DMARC at the recipient, or worse, be delivered as a
forgery. The match is exact (case-insensitive): `conf.example.com` does not allow
`mail.conf.example.com`, because a DKIM key and SPF record cover a name, not its subdomains; list
each one. The Reply-To may be anywhere (the organiser's own mailbox): replies are not sent by us.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.headerregistry import Address
from email.utils import getaddresses

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

# Twilio's alphanumeric sender id, as this project allows it: 1-11 ASCII letters and digits, at
# least one letter (all digits would be taken for a short code or a phone number).
_SMS_SENDER_ID = re.compile(r"(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{1,11}")
# A locale as the notification templates name it: `en`, `de`, `fr-ca` (rendering.py's own rule).
_LOCALE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})?")


# The portal's columns a notification needs, and the keys of the notification's context that carry
# them (apps.registrations puts them there at creation; the channels and rendering read them):
# a send then needs no query for its portal, and a replay goes out as the original did.
NOTIFICATION_CONTEXT_KEYS = {
    "email_from": "sender_email_from",
    "reply_to": "sender_reply_to",
    "sms_sender_id": "sender_sms_id",
    "default_locale": "portal_locale",
}


def notification_context(portal_values: dict[str, str]) -> dict[str, str]:
    """The context entries for a notification of a portal whose columns (by name, as
    NOTIFICATION_CONTEXT_KEYS) are given; an empty sender is left out (the platform's default)."""
    return {key: portal_values[column] for column, key in NOTIFICATION_CONTEXT_KEYS.items() if portal_values[column]}


def sender_domains() -> frozenset[str]:
    """EMAIL_SENDER_DOMAINS, lower-cased (settings fall back to DEFAULT_FROM_EMAIL's domain)."""
    return frozenset(domain.strip().lower().rstrip(".") for domain in settings.EMAIL_SENDER_DOMAINS if domain.strip())


def _mailbox(value: str, what: str) -> Address:
    """One `Name <address>` or bare address; the domain lower-cased (the local part is the owner's)."""
    value = value.strip()
    if "\r" in value or "\n" in value:
        raise ValueError(f"{what} must be one line.")
    found = getaddresses([value])
    if len(found) != 1 or not found[0][1]:
        raise ValueError(f"{what} must be one address, like “Ada Conf <hello@conf.example.com>”; got {value!r}.")
    name, address = found[0]
    # The lenient parser guesses on malformed input; what it found must be what was written.
    if value != address and not value.endswith(f"<{address}>"):
        raise ValueError(f"{what} is not a valid address: {value!r}.")
    try:
        validate_email(address)
    except ValidationError:
        raise ValueError(f"{what} is not a valid address: {address!r}.") from None
    local, _, domain = address.rpartition("@")
    return Address(display_name=name.strip(), username=local, domain=domain.lower())


def parse_email_from(value: str) -> str:
    """The From of a portal's e-mails, `Display Name <address>`, on a domain of EMAIL_SENDER_DOMAINS."""
    mailbox = _mailbox(value, "The sender (From)")
    allowed = sender_domains()
    if mailbox.domain not in allowed:
        raise ValueError(
            f"The sender's domain {mailbox.domain} is not one we may send from; use an address on "
            f"{', '.join(sorted(allowed))} (EMAIL_SENDER_DOMAINS: the domains our SPF and DKIM cover)."
        )
    return str(mailbox)


def parse_reply_to(value: str) -> str:
    """The Reply-To of a portal's e-mails: any one address (replies go to the organiser, not through us)."""
    return str(_mailbox(value, "The Reply-To"))


def parse_sms_sender_id(value: str) -> str:
    value = value.strip()
    if not _SMS_SENDER_ID.fullmatch(value):
        raise ValueError(
            f"The SMS sender id must be 1 to 11 letters and digits (no spaces or symbols), with at least "
            f"one letter; got {value!r} ({len(value)} characters)."
        )
    return value


def parse_locale(value: str) -> str:
    locale = value.strip().lower().replace("_", "-")
    if not _LOCALE.fullmatch(locale):
        raise ValueError(f"The locale must look like “en”, “de” or “fr-CA”; got {value!r}.")
    return locale


def _validated(parse: Callable[[str], str], value: str) -> None:
    try:
        parse(value)
    except ValueError as error:
        raise ValidationError(str(error)) from None


# Model field validators (module-level functions: migrations refer to them by name).
def validate_email_from(value: str) -> None:
    _validated(parse_email_from, value)


def validate_reply_to(value: str) -> None:
    _validated(parse_reply_to, value)


def validate_sms_sender_id(value: str) -> None:
    _validated(parse_sms_sender_id, value)


def validate_locale(value: str) -> None:
    _validated(parse_locale, value)
