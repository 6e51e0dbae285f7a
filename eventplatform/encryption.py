"""Encryption at rest of what would let a database dump act for someone: the portals' signing secrets.

A signing secret must be readable (the intake computes an HMAC with it), so it cannot be hashed like
a password. Svix's answer, taken here: encrypt it with a key that lives in the environment, never in
the database, so a dump or a stolen backup alone forges nothing.

Fernet (`cryptography`): AES-128-CBC with an HMAC-SHA256 over it, so a tampered value fails to
decrypt instead of yielding another secret. `WEBHOOK_SECRETS_KEY` holds one or more keys, comma-
separated (MultiFernet): the first encrypts, every one decrypts. Rotating the key: put a new key
first, run `manage.py reencrypt_portal_secrets`, then drop the old key (docs/deploy.md).
"""

from __future__ import annotations

import base64
import functools
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models


class SecretsKeyMismatch(ImproperlyConfigured):
    """A stored value does not decrypt with any key of WEBHOOK_SECRETS_KEY."""


def parse_keys(value: str) -> list[Fernet]:
    """The keys of a WEBHOOK_SECRETS_KEY value, first (the encrypting one) first. Raises
    ImproperlyConfigured naming the position of a malformed key, never the key itself."""
    keys = [part.strip() for part in value.split(",") if part.strip()]
    if not keys:
        raise ImproperlyConfigured("WEBHOOK_SECRETS_KEY holds no key.")
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"WEBHOOK_SECRETS_KEY: key {position} is not a Fernet key (32 url-safe base64 bytes; make one with "
                "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)."
            ) from None
    return fernets


def key_from_secret_key(secret_key: str) -> str:
    """A Fernet key derived from SECRET_KEY (HKDF-SHA256), for a deployment that sets no
    WEBHOOK_SECRETS_KEY: still nothing in the database decrypts it, but rotating SECRET_KEY then
    needs the derived key kept (docs/deploy.md); setting WEBHOOK_SECRETS_KEY decouples the two."""
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"eventplatform webhook signing secrets"
    ).derive(secret_key.encode())
    return base64.urlsafe_b64encode(derived).decode("ascii")


@functools.cache
def _box(keys: str) -> MultiFernet:
    return MultiFernet(parse_keys(keys))


def secrets_box() -> MultiFernet:
    """Built once per key setting (a test that changes the setting gets a new one)."""
    return _box(settings.WEBHOOK_SECRETS_KEY)


def encrypt(text: str) -> str:
    return secrets_box().encrypt(text.encode()).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return secrets_box().decrypt(token.encode("ascii")).decode()
    except (InvalidToken, UnicodeEncodeError):
        raise SecretsKeyMismatch(
            "A stored secret does not decrypt with any key in WEBHOOK_SECRETS_KEY: was the key that encrypted it "
            "removed before `reencrypt_portal_secrets` ran? (docs/deploy.md)"
        ) from None


class EncryptedTextField(models.TextField):
    """Python sees the plain text; the column holds its Fernet token.

    Tokens differ at every write (a random IV), so the column cannot be compared with a value:
    every lookup but `isnull` is refused (a FieldError), rather than silently matching nothing.
    """

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        return None if value is None else decrypt(value)

    def get_db_prep_save(self, value: Any, connection: Any) -> Any:
        value = super().get_db_prep_save(value, connection)
        return None if value is None else encrypt(value)

    def get_lookup(self, lookup_name: str) -> Any:
        return super().get_lookup(lookup_name) if lookup_name == "isnull" else None
