"""Indexes every write paid for and no query needs (docs/performance.md, issue 11): single-column
indexes a composite one already leads with, low-cardinality columns, PostgreSQL's LIKE twins."""

import django.db.models.deletion
from django.db import migrations, models

from eventplatform.migration_operations import drop_field_indexes


class Migration(migrations.Migration):

    dependencies = [
        ('registrations', '0005_first_name_search_index'),
        ('webhooks', '0007_lean_write_indexes'),
    ]

    operations = [
        drop_field_indexes(
            table='registrations_registration',
            indexes={
                'registrations_registration_portal_id_297287f9': 'portal_id',
                'registrations_registration_status_dc2e1c87': 'status',
            },
            state_operations=[
                migrations.AlterField(
                    model_name='registration',
                    name='portal',
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='registrations', to='webhooks.portal'),
                ),
                migrations.AlterField(
                    model_name='registration',
                    name='status',
                    field=models.CharField(choices=[('active', 'Active'), ('cancelled', 'Cancelled')], default='active', max_length=16),
                ),
            ],
        ),
    ]
