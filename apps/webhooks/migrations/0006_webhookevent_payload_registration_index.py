"""The attendee's story page finds a registration's deliveries that its event log does not name
(rejected ones, accepted ones not applied) by portal and the payload's registration id
(apps/registrations/selectors.py `webhook_events_of_registration`). Without this index that is a
scan of every event of the portal: the query 134 ms at 512,500 events, the story's data 123 ms
(300-400 ms at a million events); with it 0.06 ms and 6 ms (docs/performance.md).

PostgreSQL only: there `payload__data__registration_id=` compiles to
`(payload #> '{data,registration_id}') = '"R-1"'`, which this expression index answers; SQLite
(embedded mode) compiles the lookup to a different expression (JSON_EXTRACT) and scans its small
table. The index is in the model's state either way (`makemigrations --check` stays clean); the
SQL is Django's own for that index, so it matches the lookup exactly.

Built CONCURRENTLY (hence `atomic = False`): webhooks_webhookevent is the intake's table, and a
plain CREATE INDEX would block every webhook insert while it reads the table. If the migration dies
midway PostgreSQL leaves an INVALID index of that name; the forwards step drops it and builds again.
"""

from django.db import migrations, models
from django.db.models.fields.json import KeyTransform

INDEX = models.Index(models.F("portal"), KeyTransform("registration_id", KeyTransform("data", "payload")),
                     name="webhook_event_payload_reg_idx")


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX.name}")  # an INVALID leftover of a died run
    schema_editor.add_index(apps.get_model("webhooks", "WebhookEvent"), INDEX, concurrently=True)


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.remove_index(apps.get_model("webhooks", "WebhookEvent"), INDEX, concurrently=True)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ('webhooks', '0005_delivery_id_index'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name='webhookevent', index=INDEX)],
            database_operations=[migrations.RunPython(create_index, drop_index)],
        ),
    ]
