"""A real SMTP server (aiosmtpd) the tests control: records messages, can refuse on demand.

Scripted replies per stage: `scripted["RCPT"].append("451 ...")` answers the next RCPT TO with it
(one per command), `always["AUTH"] = "535 ..."` answers every AUTH so until cleared; `greylist_tries = 2`
answers 451 to the first two RCPTs of each recipient, as greylisting servers do. `SmtpServer(auth=True)`
offers AUTH (no TLS needed) and accepts any credentials unless scripted; `stop()` then `restart()`
is an outage (connection refused) and the server back on the same port. `data_delay = 20` keeps the
message (recorded at once) and answers the final "." that many seconds later, as content-scanning
servers do; `None` in `data_delay` never answers it. For what aiosmtpd cannot be made to say (a
421/554 greeting, a silent server, 454 to STARTTLS) there is ScriptedSmtpServer.
"""

from __future__ import annotations

import asyncio
import collections
import email
import email.policy
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, AuthResult

from tests.support.polling import free_port

STAGES = ("AUTH", "MAIL", "RCPT", "DATA")


@dataclass
class RecordingHandler:
    messages: list[EmailMessage] = field(default_factory=list)
    # Replies to give instead of accepting, consumed one per DATA command ("451 try later", "550 no").
    scripted_replies: deque[str] = field(default_factory=deque)
    refuse_all_with: str | None = None
    # Per stage: replies consumed one per command, and a reply given to every command while set.
    scripted: dict[str, deque[str]] = field(default_factory=lambda: {stage: deque() for stage in STAGES})
    always: dict[str, str] = field(default_factory=dict)
    greylist_tries: int = 0
    greylisted: collections.Counter[str] = field(default_factory=collections.Counter)
    refused: int = 0
    refused_by_stage: collections.Counter[str] = field(default_factory=collections.Counter)
    # Seconds between receiving the whole message and answering the final "." (None: never answer).
    data_delay: float | None = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _refuse(self, stage: str, reply: str | None) -> str | None:
        if reply:
            self.refused += 1
            self.refused_by_stage[stage] += 1
        return reply

    def _scripted(self, stage: str) -> str | None:
        reply = self.always.get(stage) or (self.scripted[stage].popleft() if self.scripted[stage] else None)
        return self._refuse(stage, reply)

    async def handle_AUTH(self, server, session, envelope, args):
        with self.lock:
            return self._scripted("AUTH") or MISSING

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with self.lock:
            return self._scripted("MAIL") or MISSING

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            reply = self._scripted("RCPT")
            if reply is None and self.greylisted[address] < self.greylist_tries:
                self.greylisted[address] += 1
                reply = self._refuse("RCPT", "451 4.7.1 Greylisted, please try again later")
            return reply or MISSING

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            reply = self.refuse_all_with or (self.scripted_replies.popleft() if self.scripted_replies else None)
            reply = self._refuse("DATA", reply) or self._scripted("DATA")
            if reply:
                return reply
            self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
            delay = self.data_delay
        if delay is None:
            await asyncio.sleep(3600)  # never answers; the client gives up (the server is stopped at the end)
        elif delay:
            await asyncio.sleep(delay)
        return "250 Message accepted for delivery"


def _accept_any(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=True)


class SmtpServer:
    def __init__(self, *, auth: bool = False) -> None:
        self.handler = RecordingHandler()
        self.port = free_port()
        self._options = {"auth_require_tls": False, "authenticator": _accept_any} if auth else {}
        self.controller = self._controller()

    def _controller(self) -> Controller:
        return Controller(self.handler, hostname="127.0.0.1", port=self.port, **self._options)

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

    def ids(self) -> list[str]:
        """X-Eventplatform-Notification-Id of every message received, in order (duplicates included)."""
        return [str(message["X-Eventplatform-Notification-Id"]) for message in self.messages]

    def restart(self) -> SmtpServer:
        """Up again on the same port after stop(), with the same handler (what it recorded and its
        scripts are kept): a mail server back from an outage. aiosmtpd cannot start a stopped
        Controller again (its event loop is closed), so this is a new one."""
        self.controller = self._controller()
        return self.start()


class ScriptedSmtpServer:
    """A TCP server speaking just enough SMTP to fail the way aiosmtpd cannot: `greeting` is sent on
    connect (None: say nothing, so the client times out; "" : close at once, a reset), and after a
    220 greeting, EHLO offers STARTTLS, which is answered with `starttls_reply`."""

    def __init__(self, *, greeting: str | None, starttls_reply: str = "454 4.7.0 TLS not available") -> None:
        self.greeting, self.starttls_reply = greeting, starttls_reply
        self.port = free_port()
        self.connections = 0
        self._socket = socket.create_server(("127.0.0.1", self.port))
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> ScriptedSmtpServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._talk, args=(client,), daemon=True).start()

    def _talk(self, client: socket.socket) -> None:
        with client:
            if self.greeting is None:
                self._stop.wait(10)  # silent: the client's timeout fires first
                return
            if self.greeting == "":
                return
            client.sendall(self.greeting.encode() + b"\r\n")
            if not self.greeting.startswith("220"):
                return
            reader = client.makefile("rb")
            for line in reader:
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb in (b"EHLO", b"HELO"):
                    client.sendall(b"250-scripted\r\n250 STARTTLS\r\n")
                elif verb == b"STARTTLS":
                    client.sendall(self.starttls_reply.encode() + b"\r\n")
                elif verb == b"QUIT":
                    client.sendall(b"221 bye\r\n")
                    return
                else:
                    client.sendall(b"502 5.5.1 not scripted\r\n")
