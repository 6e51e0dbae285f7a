"""A channel is one module and one settings line (issue 18): tests/notifications/pigeon_channel.py,
named only in NOTIFICATION_CHANNELS, is chosen by the registrations' rules, claimed, rendered and
sent by the real processes (gunicorn intake, outbox relay, Dramatiq worker on RabbitMQ), and every
letter lands once in its loft."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from apps.notifications import channels
from apps.notifications.checks import channels_load, claim_outlasts_a_send, longest_send_seconds
from apps.notifications.models import Notification
from tests.support.polling import free_port
from tests.support.processes import process_env, start_relay, start_web, start_worker, wait_until
from tests.support.smtp import SmtpServer
from tests.support.webhooks import encode, payload, signed_headers

WITH_PIGEON = [
    "apps.notifications.channels.email",
    "apps.notifications.channels.sms",
    "tests.notifications.pigeon_channel",
]
REGISTRATIONS = 30
STATE = {"email": "ada@example.org", "phone": "+4915112345678"}


def letters(loft: Path) -> list[dict[str, str]]:
    return [json.loads(path.read_text()) for path in loft.glob("*.json")]


def json_line(line: str) -> dict[str, object]:
    try:
        parsed = json.loads(line)
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def test_the_channel_carries_the_kinds_it_names_and_only_once_registered(settings) -> None:
    assert channels.channels_for("confirmation", STATE) == ["email"]  # the test settings: no SMS, no pigeon
    settings.NOTIFICATION_CHANNELS = WITH_PIGEON
    assert channels.channels_for("confirmation", STATE) == ["email", "pigeon"]
    assert channels.channels_for("update", STATE) == ["email"]
    assert channels.recipient_for("pigeon", {"email": "Ada@Example.ORG"}) == "Ada@example.org"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_third_channel_sends_end_to_end_through_the_real_processes(
    portal, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    env = process_env(
        EMAIL_URL=smtp_server.url,
        NOTIFICATION_CHANNELS=",".join(WITH_PIGEON),
        PIGEON_LOFT=str(tmp_path),
        RELAY_METRICS_PORT=str(free_port()),
        dramatiq_prom_port=str(free_port()),
    )
    web, base_url = start_web(env)
    worker = start_worker(env, processes=1, threads=4)
    processes = [web, start_relay(env), worker]
    try:
        for number in range(REGISTRATIONS):
            body = encode(
                payload(
                    f"R-PIGEON-{number}",
                    email=f"ada+{number}@Example.ORG",
                    phone=None,
                    starts_at="2030-06-01T18:00:00+02:00",
                )
            )
            response = requests.post(
                f"{base_url}/webhooks/pretix/", data=body, headers=signed_headers(body), timeout=10
            )
            assert response.status_code == 202, response.text
        wait_until(
            lambda: len(letters(tmp_path)) >= REGISTRATIONS and len(smtp_server.messages) >= REGISTRATIONS,
            timeout=120,
            what=f"{REGISTRATIONS} letters and {REGISTRATIONS} e-mails",
        )
        time.sleep(1)  # a duplicate would land within this
    finally:
        for process in processes:
            process.stop()

    landed = letters(tmp_path)
    pigeons = Notification.objects.filter(channel="pigeon")
    # Each registration's confirmation went by pigeon exactly once, and by e-mail exactly once.
    assert len(landed) == REGISTRATIONS == pigeons.count()
    assert sorted(letter["notification_id"] for letter in landed) == sorted(str(n.id) for n in pigeons)
    assert len(smtp_server.messages) == REGISTRATIONS
    # Recorded like any other send: sent, by its provider, with the id the provider gave.
    by_id = {letter["notification_id"]: letter for letter in landed}
    for notification in pigeons:
        letter = by_id[str(notification.id)]
        assert (notification.kind, notification.status, notification.provider) == ("confirmation", "sent", "pigeon")
        assert notification.provider_message_id == letter["id"]
        # The channel's normal form of the address, and its text-only wording (the SMS template).
        assert letter["to"] == notification.recipient and letter["to"].endswith("@example.org")
        assert letter["text"] == "Ada, you are registered for PyData Berlin on 1 Jun 18:00."
    assert not list(tmp_path.glob(".*.tmp"))
    # Its log lines name the channel and show the address masked by the channel's own mask.
    sent_lines = [
        line for line in map(json_line, worker.output().splitlines()) if line.get("event") == "notification.sent"
    ]
    assert (
        sorted(line["recipient"] for line in sent_lines if line["channel"] == "pigeon")
        == ["a***@example.org"] * REGISTRATIONS
    )
    assert "ada+7@example.org" not in worker.output()


@pytest.mark.parametrize(
    "entry",
    ["tests.notifications.no_such_channel", "apps.notifications.models", "apps.notifications.channels.email"],
    ids=["missing module", "no CHANNEL", "same name twice"],
)
def test_a_channels_setting_that_does_not_load_is_refused_at_start(settings, entry: str) -> None:
    settings.NOTIFICATION_CHANNELS = ["apps.notifications.channels.email", entry]
    assert [error.id for error in channels_load()] == ["notifications.E003"]
    assert claim_outlasts_a_send() == []  # reported once, by E003


def test_a_channels_slowest_call_is_what_the_claim_must_outlast(settings) -> None:
    settings.NOTIFICATION_CHANNELS = WITH_PIGEON
    settings.EMAIL_TIMEOUT, settings.EMAIL_DATA_TIMEOUT_SECONDS, settings.SMS_TIMEOUT_SECONDS = 1, 1, 100
    assert longest_send_seconds() == 2 * 100 + 60  # SMS is the slowest now
    settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS = 250
    assert [error.id for error in claim_outlasts_a_send()] == ["notifications.E001"]
    assert channels_load() == []
