"""NOTIFY only for rows due now: a row inserted with a delay (a retry round, a send the apply actor
makes itself with its outbox row as the safety net) would wake every relay for nothing. The rows of
the statement are read from its transition table; a second of margin keeps a clock a little ahead
of PostgreSQL's from delaying a due row until the relay's next poll."""

from django.db import migrations

from eventplatform.migration_operations import run_sql_on_postgresql

UP = """
CREATE OR REPLACE FUNCTION outbox_notify_due() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_rows WHERE available_at <= clock_timestamp() + interval '1 second') THEN
        PERFORM pg_notify('outbox_new', '');
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS outbox_notify ON outbox_outboxmessage;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox_outboxmessage
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify_due();
"""
DOWN = """
DROP TRIGGER IF EXISTS outbox_notify ON outbox_outboxmessage;
DROP FUNCTION IF EXISTS outbox_notify_due();
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox_outboxmessage
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
"""


class Migration(migrations.Migration):
    dependencies = [("outbox", "0002_outbox_notify")]
    operations = [run_sql_on_postgresql(up=[UP], down=[DOWN])]
