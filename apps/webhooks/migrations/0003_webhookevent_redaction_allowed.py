"""Webhook events stay immutable, with one exception: redaction (issue 10 part 6).

Retention blanks the raw bodies and payloads of applied events past their time, and an erasure
request removes one person's data from every event; the append-only trigger of 0002 made both
impossible. The trigger now lets exactly one UPDATE through, and nothing else:
- on PostgreSQL the transaction has set `eventplatform.redaction` to `on` (only
  apps.webhooks.redaction does, with `set_config(..., true)`: it ends with the transaction);
- the new raw body is empty, the new payload is NULL or a JSON object carrying a `redacted` key,
  the new errors are unchanged, NULL or such an object;
- every other column (id, portal, delivery id, type, status, received_at) is unchanged.
DELETE is still refused, always. SQLite (embedded mode) has no session settings; its trigger
checks the shape of the update only.
"""

from django.db import migrations

POSTGRES_UP = """
CREATE OR REPLACE FUNCTION webhooks_event_immutable() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND current_setting('eventplatform.redaction', true) = 'on'
       AND octet_length(NEW.raw_body) = 0
       AND (NEW.payload IS NULL OR (jsonb_typeof(NEW.payload) = 'object' AND (NEW.payload -> 'redacted') IS NOT NULL))
       AND (NEW.errors IS NOT DISTINCT FROM OLD.errors OR NEW.errors IS NULL
            OR (jsonb_typeof(NEW.errors) = 'object' AND (NEW.errors -> 'redacted') IS NOT NULL))
       AND NEW.id = OLD.id AND NEW.portal_id = OLD.portal_id AND NEW.delivery_id = OLD.delivery_id
       AND NEW.type = OLD.type AND NEW.status = OLD.status AND NEW.received_at = OLD.received_at
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'webhook events are immutable (%% refused; only a redaction may update one)', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
"""
POSTGRES_DOWN = """
CREATE OR REPLACE FUNCTION webhooks_event_immutable() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'webhook events are immutable (%% refused)', TG_OP USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
"""
SQLITE_UP = [
    "DROP TRIGGER IF EXISTS webhooks_event_no_update;",
    "CREATE TRIGGER webhooks_event_no_update BEFORE UPDATE ON webhooks_webhookevent "
    "WHEN NOT (length(NEW.raw_body) = 0 "
    "AND (NEW.payload IS NULL OR json_extract(NEW.payload, '$.redacted') IS NOT NULL) "
    "AND (NEW.errors IS OLD.errors OR NEW.errors IS NULL OR json_extract(NEW.errors, '$.redacted') IS NOT NULL) "
    "AND NEW.id IS OLD.id AND NEW.portal_id IS OLD.portal_id AND NEW.delivery_id IS OLD.delivery_id "
    "AND NEW.type IS OLD.type AND NEW.status IS OLD.status AND NEW.received_at IS OLD.received_at) "
    "BEGIN SELECT RAISE(ABORT, 'webhook events are immutable (UPDATE refused; only a redaction may update one)'); "
    "END;",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS webhooks_event_no_update;",
    "CREATE TRIGGER webhooks_event_no_update BEFORE UPDATE ON webhooks_webhookevent "
    "BEGIN SELECT RAISE(ABORT, 'webhook events are immutable (UPDATE refused)'); END;",
]


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
    dependencies = [("webhooks", "0002_webhookevent_immutable")]
    operations = [migrations.RunPython(up, down)]
