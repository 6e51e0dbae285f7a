"""Portal signing secrets encrypted at rest (issue 17 item 10; eventplatform/encryption.py).

The column becomes text (a Fernet token of a 200-character secret is about 360 characters) and each
stored secret is replaced by its token under the first key of WEBHOOK_SECRETS_KEY. The (portal,
secret) unique constraint goes: tokens of one secret differ at every write, so it could not hold;
`portal_create` keeps a portal's secrets distinct under the portal's row lock.

Reversible: backwards decrypts every row (the key must still be set) and restores the column and
the constraint. Raw SQL on purpose: the historical model's field would decrypt on read, and a row
is recognised as plain or encrypted by its `whsec_` prefix (a token starts with `gAAAA`), so
running either direction again on a half-done table finishes it instead of encrypting twice.
"""

from django.db import migrations, models

import eventplatform.encryption

TABLE = "webhooks_portalsecret"


def _rewrite(schema_editor, convert, *, plain: bool) -> None:
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, secret FROM {TABLE}")
        rows = cursor.fetchall()
        for pk, value in rows:
            if value.startswith("whsec_") == plain:
                cursor.execute(f"UPDATE {TABLE} SET secret = %s WHERE id = %s", [convert(value), pk])


def encrypt_secrets(apps, schema_editor) -> None:
    _rewrite(schema_editor, eventplatform.encryption.encrypt, plain=True)


def decrypt_secrets(apps, schema_editor) -> None:
    _rewrite(schema_editor, eventplatform.encryption.decrypt, plain=False)


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks', '0007_lean_write_indexes'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='portalsecret',
            name='portal_secret_unique',
        ),
        migrations.AlterField(
            model_name='portalsecret',
            name='secret',
            field=eventplatform.encryption.EncryptedTextField(
                help_text='whsec_ followed by base64 key bytes (stored encrypted)'),
        ),
        migrations.RunPython(encrypt_secrets, decrypt_secrets),
    ]
