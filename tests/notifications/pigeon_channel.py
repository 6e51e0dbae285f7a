"""A third channel made only for tests: the proof that a channel is one module and one settings line.

Registered by NOTIFICATION_CHANNELS (tests/notifications/test_third_channel.py), it carries
confirmations and cancellations (not updates, not reminders) to the registration's e-mail address,
with the SMS wording (one line of text). Its one provider lands each message as a letter, a JSON
file, in the loft directory PIGEON_LOFT names: a real sink the test reads and counts. Nothing in
apps/ names it. It has no rows of its own in the failure classification: a provider's unexpected
error (an unwritable loft) is the core's UNCLASSIFIED, retried and counted toward its breaker.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from apps.notifications.channels import Channel
from apps.notifications.models import Notification
from apps.notifications.providers import OutgoingMessage, Provider
from eventplatform.addresses import normalise_email
from eventplatform.logging import mask_email


class PigeonProvider:
    name = "pigeon"
    channel = "pigeon"

    def __init__(self, loft: Path) -> None:
        self.loft = loft

    def send(self, message: OutgoingMessage) -> str:
        letter_id = f"pigeon-{uuid.uuid4().hex}"
        letter = {"id": letter_id, "notification_id": message.notification_id, "to": message.recipient}
        draft = self.loft / f".{letter_id}.tmp"
        draft.write_text(json.dumps({**letter, "text": message.text}))
        draft.replace(self.loft / f"{letter_id}.json")  # the reader never sees half a letter
        return letter_id


def build_providers() -> list[Provider]:
    return [PigeonProvider(Path(os.environ["PIGEON_LOFT"]))]


CHANNEL = Channel(
    name="pigeon",
    kinds=frozenset({Notification.Kind.CONFIRMATION, Notification.Kind.CANCELLATION}),
    address_field="email",
    normalise=normalise_email,
    mask=mask_email,
    build_providers=build_providers,
    longest_call_seconds=lambda: 1.0,  # a local file write
    rules=(),
    text_template="sms.txt",
)
