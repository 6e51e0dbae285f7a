"""The attendee's story search (apps/registrations/admin_story.py) adds the first name to the
registration search, as partial match (`UPPER(first_name) LIKE UPPER('%term%')`): without its own
trigram index the whole ORed search condition cannot be a BitmapOr of index scans, and every search
of the registration list became a sequential scan of the table (575 / 795 ms p50 / p95 at 500,000
registrations; docs/performance.md). PostgreSQL only, as migration 0004's trigram indexes: SQLite
(embedded mode) has no pg_trgm and scans its small table."""

from django.db import migrations

from eventplatform.migration_operations import run_sql_on_postgresql

UP = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS registration_first_name_trgm_idx ON registrations_registration "
    "USING gin (UPPER(first_name) gin_trgm_ops)",
]
DOWN = ["DROP INDEX IF EXISTS registration_first_name_trgm_idx"]


class Migration(migrations.Migration):

    dependencies = [
        ('registrations', '0004_support_search_indexes'),
    ]

    operations = [
        run_sql_on_postgresql(up=UP, down=DOWN),
    ]
