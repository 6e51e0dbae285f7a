"""Indexes for what support staff filter and search at a million notifications (docs/performance.md).

The trigram index answers the admin's partial recipient search (`UPPER(recipient) LIKE UPPER('%ada%')`,
what Django's icontains sends to PostgreSQL). PostgreSQL only: SQLite (embedded mode) has no
pg_trgm and scans its small table. CONCURRENTLY is not used: a migration runs in a transaction.
"""

from django.db import migrations, models

from eventplatform.migration_operations import run_sql_on_postgresql

TRIGRAM_UP = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS notif_recipient_trgm_idx ON notifications_notification "
    "USING gin (UPPER(recipient) gin_trgm_ops)",
]
TRIGRAM_DOWN = ["DROP INDEX IF EXISTS notif_recipient_trgm_idx"]


class Migration(migrations.Migration):

    dependencies = [
        ('notifications', '0005_notification_replay_audit'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='notification',
            index=models.Index(fields=['status', '-created_at'], name='notif_status_created_idx'),
        ),
        migrations.AddIndex(
            model_name='notification',
            index=models.Index(fields=['status', 'updated_at'], name='notif_status_updated_idx'),
        ),
        migrations.AddIndex(
            model_name='notificationattempt',
            index=models.Index(fields=['started_at'], name='attempt_started_idx'),
        ),
        run_sql_on_postgresql(up=TRIGRAM_UP, down=TRIGRAM_DOWN),
    ]
