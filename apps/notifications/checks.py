"""The claim must outlast the longest provider call, or a second worker re-claims a row still being sent.

A `sending` row older than NOTIFICATION_CLAIM_TIMEOUT_SECONDS is taken to belong to a dead worker
(sending._claim). If one live send can take longer, its row is claimed and sent again meanwhile:
the duplicate this guards against. The same holds for the limits around the send: Dramatiq's
TimeLimit (it interrupts the thread mid-call: the actors that send get `send_time_limit_ms()`) and
RabbitMQ's consumer_timeout (it closes the channel of a message held longer: the broker redelivers
it), which must both be longer than the claim. Checked at every start (Django's system checks run
before `runserver`, `migrate`, `rundramatiq` and the tests).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from apps.notifications import channels

# Recording `sent` after the provider accepted may retry for this long (sending._mark_sent).
SENT_RECORD_SECONDS = 60.0


def longest_send_seconds() -> float:
    """The longest one notification_send can take: the slowest channel's provider calls (each
    channel says, `Channel.longest_call_seconds`: e-mail 6 x EMAIL_TIMEOUT + EMAIL_DATA_TIMEOUT_SECONDS
    per provider, SMS 2 x SMS_TIMEOUT_SECONDS), then recording `sent`."""
    return max(channel.longest_call_seconds() for channel in channels.channels()) + SENT_RECORD_SECONDS


def send_time_limit_ms() -> int:
    """Dramatiq's time limit for an actor that sends: the claim timeout (after it the claim is stale anyway)."""
    return int(settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS * 1000)


@checks.register()
def channels_load(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """NOTIFICATION_CHANNELS names modules that load, each with a CHANNEL: refused at start rather
    than at a worker's first send."""
    try:
        channels.channels()
    except (ImportError, ImproperlyConfigured) as error:
        return [
            checks.Error(
                f"NOTIFICATION_CHANNELS cannot be loaded: {error}",
                hint="Each entry is the module path of a channel exposing CHANNEL (docs/architecture.md).",
                id="notifications.E003",
            )
        ]
    return []


@checks.register()
def claim_outlasts_a_send(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    claim = settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS
    problems: list[checks.CheckMessage] = []
    try:
        calls = {channel.name: channel.longest_call_seconds() for channel in channels.channels()}
    except (ImportError, ImproperlyConfigured):
        return problems  # channels_load reports it
    longest = longest_send_seconds()
    if claim <= longest:
        spent = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in calls.items())
        problems.append(
            checks.Error(
                f"NOTIFICATION_CLAIM_TIMEOUT_SECONDS ({claim}) must exceed the longest send ({longest:.0f} s: the "
                f"slowest channel's provider calls ({spent}), then {SENT_RECORD_SECONDS:.0f} s to record `sent`), "
                "or a live send is claimed and sent again by another worker.",
                hint="Raise NOTIFICATION_CLAIM_TIMEOUT_SECONDS or lower EMAIL_DATA_TIMEOUT_SECONDS.",
                id="notifications.E001",
            )
        )
    if claim >= settings.BROKER_CONSUMER_TIMEOUT_SECONDS:
        problems.append(
            checks.Error(
                f"NOTIFICATION_CLAIM_TIMEOUT_SECONDS ({claim}) must be below RabbitMQ's consumer_timeout "
                f"(BROKER_CONSUMER_TIMEOUT_SECONDS, {settings.BROKER_CONSUMER_TIMEOUT_SECONDS}): a send held longer "
                "has its channel closed and its message redelivered.",
                hint="Raise consumer_timeout in rabbitmq.conf and BROKER_CONSUMER_TIMEOUT_SECONDS with it.",
                id="notifications.E002",
            )
        )
    return problems
