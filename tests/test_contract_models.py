"""CONTRACT section 6: the models other tools read with `python manage.py shell -c`, by the names the
contract gives and with the values it lists, checked from the contract's text, not from the code."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from django.apps import apps
from django.db import models

from tests.support.processes import ROOT, process_env

# model label -> {field: the values the contract lists for it (None: any)}
CONTRACT_FIELDS: dict[str, dict[str, set[str] | None]] = {
    "webhooks.WebhookEvent": {
        "id": None,
        "portal": None,
        "delivery_id": None,
        "type": None,
        "received_at": None,
        "status": {"accepted", "rejected"},
    },
    "registrations.Registration": {"portal": None, "external_id": None, "status": {"active", "cancelled"}},
    "notifications.Notification": {
        "id": None,
        "registration": None,
        "kind": {"confirmation", "update", "cancellation", "reminder_24h", "reminder_1h"},
        "channel": {"email", "sms"},
        "status": {
            "pending",
            "sending",
            "retrying",
            "sent",
            "delivered",
            "bounced",
            "complained",
            "suppressed",
            "dead",
            "cancelled",
        },
        "attempts": None,
        "last_error_code": None,
        "last_error_message": None,
        "provider_message_id": None,
    },
    "notifications.Suppression": {
        "channel": {"email", "sms"},
        "address": None,
        "reason": {"bounced", "complained", "opted_out", "manual"},
        "created_at": None,
        "lifted_at": None,
    },
    "outbox.OutboxMessage": {"created_at": None, "published_at": None},
}
# The modules the contract names them in.
CONTRACT_MODULES = {
    "webhooks.WebhookEvent": "apps.webhooks.models",
    "registrations.Registration": "apps.registrations.models",
    "notifications.Notification": "apps.notifications.models",
    "notifications.Suppression": "apps.notifications.models",
    "outbox.OutboxMessage": "apps.outbox.models",
}
FIELD_CASES = [(label, name, values) for label, fields in CONTRACT_FIELDS.items() for name, values in fields.items()]


@pytest.mark.parametrize(("label", "name", "values"), FIELD_CASES, ids=[f"{c[0]}.{c[1]}" for c in FIELD_CASES])
def test_each_field_the_contract_names_exists_with_its_values(label: str, name: str, values: set[str] | None) -> None:
    model = apps.get_model(label)
    assert model.__module__ == CONTRACT_MODULES[label]
    field = model._meta.get_field(name)
    if values is not None:
        assert {choice for choice, _ in field.choices or []} == values


@pytest.mark.parametrize("label", ["webhooks.WebhookEvent", "notifications.Notification"])
def test_ids_are_uuids(label: str) -> None:
    assert isinstance(apps.get_model(label)._meta.get_field("id"), models.UUIDField)


@pytest.mark.parametrize(
    ("label", "name"),
    [("notifications.Suppression", "lifted_at"), ("outbox.OutboxMessage", "published_at")],
)
def test_null_until_it_happens(label: str, name: str) -> None:
    assert apps.get_model(label)._meta.get_field(name).null


@pytest.mark.django_db(transaction=True)
def test_manage_py_shell_reads_every_field_by_its_contract_name() -> None:
    """What an operator or an acceptance check types: `manage.py shell -c` in a separate process, every
    model imported from the module the contract names, every field read by a query on the database."""
    lines = []
    for label, fields in CONTRACT_FIELDS.items():
        module, model = CONTRACT_MODULES[label], label.split(".")[1]
        lines.append(f"from {module} import {model}")
        lines.append(f"print({model}.__name__, list({model}.objects.values_list({', '.join(map(repr, fields))})[:1]))")
    marker = uuid.uuid4().hex
    lines.append(f"print({marker!r})")
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", "\n".join(lines)],
        cwd=ROOT,
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout
    for label in CONTRACT_FIELDS:
        assert f"{label.split('.')[1]} []" in result.stdout


@pytest.mark.django_db
def test_a_suppressions_address_is_the_e_mail_lower_cased_or_the_e164_number() -> None:
    from apps.notifications.delivery import suppression_add

    email, _ = suppression_add(channel="email", address="Ada.Lovelace@Example.ORG", reason="bounced")
    sms, _ = suppression_add(channel="sms", address="+4915112345678", reason="opted_out")
    Suppression = apps.get_model("notifications.Suppression")
    assert set(Suppression.objects.values_list("channel", "address", "reason")) == {
        ("email", "ada.lovelace@example.org", "bounced"),
        ("sms", "+4915112345678", "opted_out"),
    }
    assert email.lifted_at is None and sms.lifted_at is None and email.created_at is not None
