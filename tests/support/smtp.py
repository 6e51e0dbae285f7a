"""A real SMTP server (aiosmtpd) the tests control: records messages, can refuse on demand."""

from __future__ import annotations

import email
import email.policy
import threading
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from tests.support.polling import free_port


@dataclass
class RecordingHandler:
    messages: list[EmailMessage] = field(default_factory=list)
    # Replies to give instead of accepting, consumed one per DATA command ("451 try later", "550 no").
    scripted_replies: deque[str] = field(default_factory=deque)
    refuse_all_with: str | None = None
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, N802 - aiosmtpd's hook signature
        with self.lock:
            reply = self.refuse_all_with or (self.scripted_replies.popleft() if self.scripted_replies else None)
            if reply:
                self.refused += 1
                return reply
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self) -> None:
        self.handler = RecordingHandler()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def messages(self) -> list[EmailMessage]:
        with self.handler.lock:
            return list(self.handler.messages)

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
