"""SMS on the console, as Django's console e-mail backend does for e-mail: the embedded default's
SMS provider (SMS_CONSOLE, on when neither DATABASE_URL nor SMS_API_URL is set), so a newcomer's
`send_test_webhook --phone` shows the SMS an attendee would get. Never used beside a real API."""

from __future__ import annotations

import sys
import threading
import uuid
from typing import TextIO

from apps.notifications.providers import OutgoingMessage


class ConsoleSmsProvider:
    name = "sms"
    channel = "sms"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()  # one SMS at a time: worker threads would interleave their lines

    def send(self, message: OutgoingMessage) -> str:
        message_id = f"console-{uuid.uuid4().hex}"
        rule = "-" * 79
        with self._lock:
            self.stream.write(
                f"SMS To: {message.recipient}\nX-Eventplatform-Notification-Id: "
                f"{message.notification_id}\nMessage-Id: {message_id}\n\n{message.text}\n{rule}\n"
            )
            self.stream.flush()
        return message_id
