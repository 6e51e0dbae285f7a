"""Indexes every write paid for and no query needs (docs/performance.md, issue 11): single-column
indexes a composite one already leads with, low-cardinality columns, PostgreSQL's LIKE twins."""

import django.db.models.deletion
from django.db import migrations, models

from eventplatform.migration_operations import drop_field_indexes


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks', '0006_webhookevent_payload_registration_index'),
    ]

    operations = [
        drop_field_indexes(
            table='webhooks_webhookevent',
            indexes={
                'webhooks_webhookevent_portal_id_491288ce': 'portal_id',
                'webhooks_webhookevent_status_ca3d6ef8': 'status',
                'webhooks_webhookevent_type_3d35fbcc': 'type',
            },
            state_operations=[
                migrations.AlterField(
                    model_name='webhookevent',
                    name='portal',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='events', to='webhooks.portal'),
                ),
                migrations.AlterField(
                    model_name='webhookevent',
                    name='status',
                    field=models.CharField(choices=[('accepted', 'Accepted'), ('rejected', 'Rejected')], max_length=16),
                ),
                migrations.AlterField(
                    model_name='webhookevent',
                    name='type',
                    field=models.CharField(max_length=64),
                ),
            ],
        ),
        migrations.AddIndex(
            model_name='webhookevent',
            index=models.Index(fields=['status'], name='webhook_event_status_idx'),
        ),
    ]
