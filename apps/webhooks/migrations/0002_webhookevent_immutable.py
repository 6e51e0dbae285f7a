"""The database itself refuses UPDATE and DELETE on webhook events: the log is append-only even
for code (or a person with a SQL shell) that bypasses the model. TRUNCATE stays possible: it is
an operator's deliberate act (and how test databases are reset), not an application write."""

from django.db import migrations

POSTGRES_UP = """
CREATE OR REPLACE FUNCTION webhooks_event_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'webhook events are immutable (%% refused)', TG_OP USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER webhooks_event_immutable BEFORE UPDATE OR DELETE ON webhooks_webhookevent
    FOR EACH ROW EXECUTE FUNCTION webhooks_event_immutable();
"""
POSTGRES_DOWN = """
DROP TRIGGER IF EXISTS webhooks_event_immutable ON webhooks_webhookevent;
DROP FUNCTION IF EXISTS webhooks_event_immutable();
"""
SQLITE_UP = [
    "CREATE TRIGGER webhooks_event_no_update BEFORE UPDATE ON webhooks_webhookevent "
    "BEGIN SELECT RAISE(ABORT, 'webhook events are immutable (UPDATE refused)'); END;",
    "CREATE TRIGGER webhooks_event_no_delete BEFORE DELETE ON webhooks_webhookevent "
    "BEGIN SELECT RAISE(ABORT, 'webhook events are immutable (DELETE refused)'); END;",
]
SQLITE_DOWN = ["DROP TRIGGER IF EXISTS webhooks_event_no_update;", "DROP TRIGGER IF EXISTS webhooks_event_no_delete;"]


def up(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_UP)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_UP:
            schema_editor.execute(statement)


def down(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(POSTGRES_DOWN)
    elif schema_editor.connection.vendor == "sqlite":
        for statement in SQLITE_DOWN:
            schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("webhooks", "0001_initial")]
    operations = [migrations.RunPython(up, down)]
