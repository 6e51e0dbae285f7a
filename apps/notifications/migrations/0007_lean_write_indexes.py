"""Indexes every write paid for and no query needs (docs/performance.md, issue 11): single-column
indexes a composite one already leads with, low-cardinality columns, PostgreSQL's LIKE twins."""

import django.db.models.deletion
from django.db import migrations, models

from eventplatform.migration_operations import drop_field_indexes


class Migration(migrations.Migration):

    dependencies = [
        ('notifications', '0006_support_list_indexes'),
        ('registrations', '0006_lean_write_indexes'),
    ]

    operations = [
        drop_field_indexes(
            table='notifications_notification',
            indexes={
                'notifications_notification_channel_47dcd7f9': 'channel',
                'notifications_notification_correlation_id_ae7091b9': 'correlation_id',
                'notifications_notification_kind_1892a7d7': 'kind',
                'notifications_notification_registration_id_1949e398': 'registration_id',
                'notifications_notification_status_fc366839': 'status',
                'notifications_notification_updated_at_f00a2735': 'updated_at',
            },
            state_operations=[
                migrations.AlterField(
                    model_name='notification',
                    name='channel',
                    field=models.CharField(choices=[('email', 'Email'), ('sms', 'Sms')], max_length=8),
                ),
                migrations.AlterField(
                    model_name='notification',
                    name='correlation_id',
                    field=models.CharField(blank=True, default='', max_length=64),
                ),
                migrations.AlterField(
                    model_name='notification',
                    name='kind',
                    field=models.CharField(choices=[('confirmation', 'Confirmation'), ('update', 'Update'), ('cancellation', 'Cancellation'), ('reminder_24h', 'Reminder 24H'), ('reminder_1h', 'Reminder 1H')], max_length=32),
                ),
                migrations.AlterField(
                    model_name='notification',
                    name='registration',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='notifications', to='registrations.registration'),
                ),
                migrations.AlterField(
                    model_name='notification',
                    name='status',
                    field=models.CharField(choices=[('pending', 'Pending'), ('sending', 'Sending'), ('retrying', 'Retrying'), ('sent', 'Sent'), ('dead', 'Dead'), ('cancelled', 'Cancelled')], default='pending', max_length=16),
                ),
                migrations.AlterField(
                    model_name='notification',
                    name='updated_at',
                    field=models.DateTimeField(auto_now=True),
                ),
            ],
        ),
        drop_field_indexes(
            table='notifications_notificationattempt',
            indexes={
                'notifications_notificationattempt_outcome_c7ac9483': 'outcome',
            },
            state_operations=[
                migrations.AlterField(
                    model_name='notificationattempt',
                    name='outcome',
                    field=models.CharField(choices=[('sent', 'Sent'), ('transient_error', 'Transient Error'), ('permanent_error', 'Permanent Error')], max_length=20),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name='notification',
            index=models.Index(fields=['correlation_id'], name='notif_correlation_idx'),
        ),
        migrations.AddIndex(
            model_name='notificationattempt',
            index=models.Index(fields=['outcome'], name='attempt_outcome_idx'),
        ),
    ]
