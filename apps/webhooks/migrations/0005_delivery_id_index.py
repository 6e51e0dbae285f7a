# Support searches by delivery id (docs/performance.md).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('webhooks', '0004_portal_rotate_secret_permission'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='webhookevent',
            index=models.Index(fields=['delivery_id'], name='webhook_event_delivery_idx'),
        ),
    ]
