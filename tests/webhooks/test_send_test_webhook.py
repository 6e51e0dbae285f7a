"""`send_test_webhook`, the newcomer's first webhook: a sample event relative to now, flags that change
what an update carries, a delivery id to resend, and one clear line when nothing answers (issue 21)."""

from __future__ import annotations

import datetime as dt
import io
import zoneinfo

import pytest
from django.core.management import CommandError, call_command

from apps.webhooks.management.commands.send_test_webhook import sample_payload
from apps.webhooks.models import WebhookEvent
from tests.support.polling import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def send(*args: str) -> str:
    out = io.StringIO()
    call_command("send_test_webhook", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def demo() -> str:
    call_command("create_portal", "demo", stdout=io.StringIO())
    return "demo"


def starts_at(delivery_id: str) -> dt.datetime:
    event = WebhookEvent.objects.get(delivery_id=delivery_id).payload["data"]["event"]
    return dt.datetime.fromisoformat(event["starts_at"])


def test_the_sample_event_starts_tomorrow_at_nine_in_its_zone() -> None:
    event = sample_payload(registration_id="R-1", email="ada@example.org")["data"]["event"]
    starts = dt.datetime.fromisoformat(event["starts_at"])
    local = starts.astimezone(zoneinfo.ZoneInfo(event["timezone"]))
    today = dt.datetime.now(zoneinfo.ZoneInfo(event["timezone"])).date()
    assert (local.date(), local.time()) == (today + dt.timedelta(days=1), dt.time(9, 0))
    assert starts.utcoffset() == local.utcoffset(), "the offset is the event zone's on that day"


def test_starts_in_90m_puts_the_event_within_the_1h_reminder_window(live_server, demo) -> None:
    before = dt.datetime.now(dt.UTC)
    out = send(demo, "--url", live_server.url, "--starts-in", "90m", "--delivery-id", "msg_starts_in")
    assert out.startswith("202"), out
    assert abs(starts_at("msg_starts_in") - (before + dt.timedelta(minutes=90))) < dt.timedelta(seconds=30)


def test_an_update_carries_the_changed_fields(live_server, demo) -> None:
    out = send(demo, "--url", live_server.url, "--registration-id", "R-UPD", "--delivery-id", "msg_created")
    assert out.startswith("202") and "--registration-id R-UPD" in out, "it says how to change it"
    out = send(
        demo,
        "--url",
        live_server.url,
        "--type",
        "registration.updated",
        "--registration-id",
        "R-UPD",
        "--venue",
        "Room 2",
        "--event-name",
        "PyData Berlin 2",
        "--first-name",
        "Augusta",
        "--starts-at",
        "2030-05-06T10:30:00+02:00",
        "--delivery-id",
        "msg_updated",
    )
    assert out.startswith("202"), out
    data = WebhookEvent.objects.get(delivery_id="msg_updated").payload["data"]
    assert (data["event"]["venue"], data["event"]["name"], data["attendee"]["first_name"]) == (
        "Room 2",
        "PyData Berlin 2",
        "Augusta",
    )
    assert starts_at("msg_updated") == dt.datetime(2030, 5, 6, 8, 30, tzinfo=dt.UTC)
    # An update without a change says why no e-mail will follow
    out = send(demo, "--url", live_server.url, "--type", "registration.updated", "--registration-id", "R-UPD")
    assert "Nothing the attendee sees changed" in out
    with pytest.raises(CommandError, match="--registration-id"):
        send(demo, "--url", live_server.url, "--type", "registration.updated")


def test_a_delivery_id_sent_again_is_a_duplicate(live_server, demo) -> None:
    first = send(demo, "--url", live_server.url, "--delivery-id", "msg_twice")
    again = send(demo, "--url", live_server.url, "--delivery-id", "msg_twice")
    assert first.startswith("202") and again.startswith("200") and '"duplicate": true' in again
    assert WebhookEvent.objects.filter(delivery_id="msg_twice").count() == 1


def test_with_nothing_listening_it_says_so_in_one_line_and_exits_1(demo, capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    err = io.StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command("send_test_webhook", demo, "--url", url, stdout=io.StringIO(), stderr=err)
    assert exit_info.value.code == 1
    assert err.getvalue().strip() == f"nothing answers at {url}: is `make run` running?"
