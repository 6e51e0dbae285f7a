"""Wake the relays within milliseconds: a statement-level trigger NOTIFYs on insert. PostgreSQL
delivers the notification at COMMIT (never for a rolled-back insert) and folds duplicates within
one transaction into one."""

from django.db import migrations

UP = """
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('outbox_new', '');
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox_outboxmessage
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
"""
DOWN = """
DROP TRIGGER IF EXISTS outbox_notify ON outbox_outboxmessage;
DROP FUNCTION IF EXISTS outbox_notify();
"""


def up(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UP)


def down(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DOWN)


class Migration(migrations.Migration):
    dependencies = [("outbox", "0001_initial")]
    operations = [migrations.RunPython(up, down)]
