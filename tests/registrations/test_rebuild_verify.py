"""rebuild_registrations --verify: reports drift between projections and event logs, changes nothing."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from apps.registrations.models import Registration
from apps.registrations.services import registration_apply
from apps.webhooks.models import Portal
from tests.support.webhooks import payload
from tests.webhooks.factories import WebhookEventFactory

pytestmark = pytest.mark.django_db


def applied(portal: Portal, registration_id: str, **fields: str) -> Registration:
    body = payload(registration_id, phone=None, **fields)
    event = WebhookEventFactory(
        portal=portal,
        delivery_id=f"msg_{uuid.uuid4().hex}",
        type=body["type"],
        status="accepted",
        raw_body=b"{}",
        payload=body,
        received_at=timezone.now(),
    )
    registration_apply(event_id=str(event.id), message_id=str(uuid.uuid4()))
    return Registration.objects.get(portal=portal, external_id=registration_id)


def verify() -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("rebuild_registrations", "--verify", stdout=out)
    except CommandError as error:
        return error.returncode, out.getvalue()
    return 0, out.getvalue()


def test_clean_projections_verify_with_exit_0(portal: Portal) -> None:
    applied(portal, "R-V1")
    applied(portal, "R-V2", email="grace@example.org")
    code, output = verify()
    assert code == 0, output
    assert "verified 2 registration(s): 0 drifted" in output


def test_a_corrupted_projection_is_reported_with_exit_1_and_left_as_it_is(portal: Portal) -> None:
    applied(portal, "R-V1")
    corrupted = applied(portal, "R-V2", email="grace@example.org")
    # Given a projection written behind the event log's back
    Registration.objects.filter(pk=corrupted.pk).update(email="mallory@example.org", status="cancelled", version=7)
    code, output = verify()
    assert code == 1
    drift_lines = [line for line in output.splitlines() if line.startswith("drift ")]
    assert len(drift_lines) == 1 and drift_lines[0].startswith("drift pretix/R-V2:")
    for expected in (
        "email: stored 'mallory@example.org', from events 'grace@example.org'",
        "status: stored 'cancelled', from events 'active'",
        "version: stored 7, from events 1",
    ):
        assert expected in drift_lines[0]
    assert "verified 2 registration(s): 1 drifted" in output
    corrupted.refresh_from_db()
    assert (corrupted.email, corrupted.status, corrupted.version) == ("mallory@example.org", "cancelled", 7)
    # And a rebuild repairs it, after which it verifies clean
    call_command("rebuild_registrations", "R-V2", stdout=io.StringIO())
    assert verify()[0] == 0
