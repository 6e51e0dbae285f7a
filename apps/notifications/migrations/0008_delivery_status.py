"""Issue 19: statuses after `sent` (delivered, bounced, complained, suppressed), the report history
and the Suppression list (CONTRACT sections 6 and 8)."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('notifications', '0007_lean_write_indexes'),
        ('registrations', '0006_lean_write_indexes'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='NotificationReport',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('source', models.CharField(help_text='dsn, arf, bounce_text, smtp, esp:<name>, sms_callback, sms_api', max_length=32)),
                ('outcome', models.CharField(choices=[('delivered', 'Delivered'), ('delayed', 'Delayed'), ('bounced', 'Bounced'), ('complained', 'Complained')], max_length=16)),
                ('permanent', models.BooleanField(default=False, help_text='A permanent failure: suppresses the address.')),
                ('status_code', models.CharField(blank=True, default='', max_length=64)),
                ('diagnostic', models.TextField(blank=True, default='')),
                ('details', models.JSONField(blank=True, default=dict, help_text='What the report said, field by field.')),
                ('reported_at', models.DateTimeField(blank=True, help_text='When the reporter says it happened.', null=True)),
                ('received_at', models.DateTimeField(help_text='When we received it.')),
                ('applied', models.BooleanField(default=True, help_text="False while it waits for the notification's `sent`.")),
                ('dedupe_key', models.CharField(blank=True, default='', max_length=255)),
            ],
            options={
                'ordering': ['notification_id', 'received_at', 'id'],
            },
        ),
        migrations.CreateModel(
            name='Suppression',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('channel', models.CharField(choices=[('email', 'Email'), ('sms', 'Sms')], max_length=8)),
                ('address', models.CharField(max_length=254)),
                ('reason', models.CharField(choices=[('bounced', 'Bounced'), ('complained', 'Complained'), ('opted_out', 'Opted Out'), ('manual', 'Manual')], max_length=16)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('lifted_at', models.DateTimeField(blank=True, help_text='Null while active.', null=True)),
                ('source', models.CharField(blank=True, default='', help_text="The report's source, or admin.", max_length=32)),
                ('note', models.TextField(blank=True, default='', help_text='What caused it: the remote status and diagnostic.')),
                ('lift_reason', models.TextField(blank=True, default='')),
            ],
            options={
                'ordering': ['-created_at'],
                'permissions': [('lift_suppression', 'Can lift a suppression (send to the address again)')],
            },
        ),
        migrations.AlterField(
            model_name='notification',
            name='status',
            field=models.CharField(choices=[('pending', 'Pending'), ('sending', 'Sending'), ('retrying', 'Retrying'), ('sent', 'Sent'), ('delivered', 'Delivered'), ('bounced', 'Bounced'), ('complained', 'Complained'), ('suppressed', 'Suppressed'), ('dead', 'Dead'), ('cancelled', 'Cancelled')], default='pending', max_length=16),
        ),
        migrations.AlterField(
            model_name='notificationreplay',
            name='previous_status',
            field=models.CharField(choices=[('pending', 'Pending'), ('sending', 'Sending'), ('retrying', 'Retrying'), ('sent', 'Sent'), ('delivered', 'Delivered'), ('bounced', 'Bounced'), ('complained', 'Complained'), ('suppressed', 'Suppressed'), ('dead', 'Dead'), ('cancelled', 'Cancelled')], max_length=16),
        ),
        migrations.AddIndex(
            model_name='notification',
            index=models.Index(condition=models.Q(('provider_message_id', ''), _negated=True), fields=['provider_message_id'], name='notif_provider_message_idx'),
        ),
        migrations.AddField(
            model_name='notificationreport',
            name='notification',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='reports', to='notifications.notification'),
        ),
        migrations.AddField(
            model_name='suppression',
            name='created_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='suppression',
            name='lifted_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AddField(
            model_name='suppression',
            name='notification',
            field=models.ForeignKey(blank=True, help_text='The notification whose report caused it.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='notifications.notification'),
        ),
        migrations.AddIndex(
            model_name='notificationreport',
            index=models.Index(fields=['notification', 'received_at'], name='report_notification_idx'),
        ),
        migrations.AddIndex(
            model_name='notificationreport',
            index=models.Index(condition=models.Q(('applied', False)), fields=['received_at'], name='report_unapplied_idx'),
        ),
        migrations.AddIndex(
            model_name='notificationreport',
            index=models.Index(fields=['outcome', 'received_at'], name='report_outcome_received_idx'),
        ),
        migrations.AddConstraint(
            model_name='notificationreport',
            constraint=models.UniqueConstraint(condition=models.Q(('dedupe_key', ''), _negated=True), fields=('notification', 'dedupe_key'), name='notification_report_once'),
        ),
        migrations.AddConstraint(
            model_name='suppression',
            constraint=models.UniqueConstraint(condition=models.Q(('lifted_at__isnull', True)), fields=('channel', 'address'), name='suppression_one_active_per_address'),
        ),
    ]
