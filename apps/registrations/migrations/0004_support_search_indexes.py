"""Indexes for support's searches of registrations (docs/performance.md): exact registration ids,
and partial e-mail / last name through trigram indexes (PostgreSQL only; SQLite scans)."""

from django.db import migrations, models

from eventplatform.migration_operations import run_sql_on_postgresql

TRIGRAM_UP = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS registration_email_trgm_idx ON registrations_registration "
    "USING gin (UPPER(email) gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS registration_last_name_trgm_idx ON registrations_registration "
    "USING gin (UPPER(last_name) gin_trgm_ops)",
]
TRIGRAM_DOWN = ["DROP INDEX IF EXISTS registration_email_trgm_idx",
                "DROP INDEX IF EXISTS registration_last_name_trgm_idx"]


class Migration(migrations.Migration):

    dependencies = [
        ('registrations', '0003_failed_apply_audit_and_permissions'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='registration',
            index=models.Index(fields=['external_id'], name='registration_external_idx'),
        ),
        migrations.AddIndex(
            model_name='registration',
            index=models.Index(fields=['event_external_id'], name='registration_event_ext_idx'),
        ),
        run_sql_on_postgresql(up=TRIGRAM_UP, down=TRIGRAM_DOWN),
    ]
