"""Portal signing secrets encrypted at rest (issue 17 item 10): the column holds Fernet tokens, never
`whsec_`; webhooks still verify; a key rotation (new key first, old key still listed) keeps every
secret readable, and `reencrypt_portal_secrets` moves them to the new key; migration 0008 encrypts
the rows stored before it, and reverses."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import FieldError
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from apps.webhooks.models import Portal, PortalSecret
from apps.webhooks.selectors import portal_cache_clear
from apps.webhooks.services import portal_create, portal_secret_rotate
from eventplatform.encryption import SecretsKeyMismatch
from tests.support.webhooks import SECRET, encode, payload, signed_headers

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def stored_columns() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM webhooks_portalsecret ORDER BY id")
        return [value for (value,) in cursor.fetchall()]


def deliver(secret: str, registration_id: str) -> int:
    portal_cache_clear()
    body = encode(payload(registration_id))
    headers = {k: v for k, v in signed_headers(body, secret=secret).items() if k != "content-type"}
    return Client().post("/webhooks/pretix/", data=body, content_type="application/json", headers=headers).status_code


@pytest.mark.django_db
def test_the_column_holds_no_plaintext_and_webhooks_still_verify(portal: Portal) -> None:
    rotated = portal_secret_rotate(portal=portal)
    columns = stored_columns()
    assert len(columns) == 2
    for value in columns:
        assert "whsec_" not in value and SECRET.removeprefix("whsec_") not in value
        assert rotated.removeprefix("whsec_") not in value
        assert value.startswith("gAAAA"), "a Fernet token"
    assert sorted(PortalSecret.objects.values_list("secret", flat=True)) == sorted([SECRET, rotated])
    assert deliver(SECRET, "R-ENC-1") == 202 and deliver(rotated, "R-ENC-2") == 202
    assert deliver("whsec_" + "b3RoZXIta2V5LW5vdC10aGUtcG9ydGFscw==", "R-ENC-3") == 401


@pytest.mark.django_db
def test_a_lookup_by_secret_is_refused_rather_than_matching_nothing(portal: Portal) -> None:
    with pytest.raises(FieldError):
        list(PortalSecret.objects.filter(secret=SECRET))


@pytest.mark.django_db
def test_create_portal_stays_idempotent_with_encrypted_secrets(portal: Portal) -> None:
    assert portal_create(slug="pretix", secret=SECRET) == (portal, SECRET, False)
    assert portal.secrets.count() == 1, "the same secret again adds nothing"


@pytest.mark.django_db
def test_key_rotation_the_old_key_still_decrypts_then_reencrypt_moves_every_secret(settings, portal: Portal) -> None:
    # Given secrets encrypted under OLD_KEY
    settings.WEBHOOK_SECRETS_KEY = OLD_KEY
    PortalSecret.objects.all().delete()
    portal_create(slug="pretix", secret=SECRET)
    rotated = portal_secret_rotate(portal=portal)
    # When the operator puts a new key first, the old one second
    settings.WEBHOOK_SECRETS_KEY = f"{NEW_KEY},{OLD_KEY}"
    # Then every secret still decrypts and signs
    assert sorted(PortalSecret.objects.values_list("secret", flat=True)) == sorted([SECRET, rotated])
    assert deliver(SECRET, "R-ROT-1") == 202
    # and a secret added now is encrypted with the new (first) key
    third = portal_secret_rotate(portal=portal)
    settings.WEBHOOK_SECRETS_KEY = NEW_KEY
    assert PortalSecret.objects.latest("pk").secret == third
    with pytest.raises(SecretsKeyMismatch):  # the two older ones are still under OLD_KEY
        list(PortalSecret.objects.values_list("secret", flat=True))
    # When reencrypt_portal_secrets runs with both keys listed
    settings.WEBHOOK_SECRETS_KEY = f"{NEW_KEY},{OLD_KEY}"
    call_command("reencrypt_portal_secrets")
    # Then the old key can be dropped
    settings.WEBHOOK_SECRETS_KEY = NEW_KEY
    assert sorted(PortalSecret.objects.values_list("secret", flat=True)) == sorted([SECRET, rotated, third])
    assert deliver(rotated, "R-ROT-2") == 202


@pytest.mark.django_db(transaction=True)
def test_migration_0008_encrypts_existing_rows_and_reverses() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate([("webhooks", "0007_lean_write_indexes")])
    try:
        # Given a secret stored in clear before 0008
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO webhooks_portal (slug, name, active, created_at) "
                "VALUES ('legacy', 'Legacy', true, now()) RETURNING id"
            )
            (portal_id,) = cursor.fetchone()
            cursor.execute(
                "INSERT INTO webhooks_portalsecret (portal_id, secret, active, created_at) "
                "VALUES (%s, %s, true, now())",
                [portal_id, SECRET],
            )
        # When 0008 runs
        executor = MigrationExecutor(connection)
        executor.migrate([("webhooks", "0008_encrypt_portal_secrets")])
        # Then the column holds a token that decrypts to the secret
        assert stored_columns()[0].startswith("gAAAA")
        assert PortalSecret.objects.get(portal__slug="legacy").secret == SECRET
        # and backwards gives the plain secret back
        executor = MigrationExecutor(connection)
        executor.migrate([("webhooks", "0007_lean_write_indexes")])
        assert stored_columns() == [SECRET]
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
