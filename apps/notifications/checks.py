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

# Recording `sent` after the provider accepted may retry for this long (sending._mark_sent).
SENT_RECORD_SECONDS = 60.0
# The SMTP conversation before the end of DATA: connect, greeting, EHLO, MAIL, RCPT, DATA, each
# answering within EMAIL_TIMEOUT.
SMTP_SHORT_STEPS = 6


def longest_send_seconds() -> float:
    """The longest one notification_send can take: its provider calls (a misconfigured primary hands
    the send to the fallback, so two e-mail calls), then recording `sent`."""
    email_call = SMTP_SHORT_STEPS * settings.EMAIL_TIMEOUT + settings.EMAIL_DATA_TIMEOUT_SECONDS
    email_calls = 2 if (settings.EMAIL_FALLBACK_URL or settings.EMAIL_FALLBACK_BACKEND) else 1
    sms_call = 2 * settings.SMS_TIMEOUT_SECONDS  # the request, then the listing that asks whether it arrived
    return max(email_calls * email_call, sms_call) + SENT_RECORD_SECONDS


def send_time_limit_ms() -> int:
    """Dramatiq's time limit for an actor that sends: the claim timeout (after it the claim is stale anyway)."""
    return int(settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS * 1000)


@checks.register()
def claim_outlasts_a_send(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    claim = settings.NOTIFICATION_CLAIM_TIMEOUT_SECONDS
    longest = longest_send_seconds()
    problems: list[checks.CheckMessage] = []
    if claim <= longest:
        problems.append(
            checks.Error(
                f"NOTIFICATION_CLAIM_TIMEOUT_SECONDS ({claim}) must exceed the longest send ({longest:.0f} s: "
                f"{SMTP_SHORT_STEPS} x EMAIL_TIMEOUT + EMAIL_DATA_TIMEOUT_SECONDS per e-mail provider, 2 x "
                f"SMS_TIMEOUT_SECONDS, {SENT_RECORD_SECONDS:.0f} s to record `sent`), or a live send is claimed and "
                "sent again by another worker.",
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
