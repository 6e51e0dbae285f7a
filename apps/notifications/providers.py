"""Providers behind one small interface: `send(message) -> provider message id`.

Each provider sorts its failures into ProviderTransientError (retry) and ProviderPermanentError
(do not), each with a stable error code from the catalogue.
"""

from __future__ import annotations

import smtplib
import socket
import threading
from dataclasses import dataclass
from typing import Protocol

import requests
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.message import make_msgid

from apps.notifications.errors import ProviderPermanentError, ProviderTransientError


@dataclass(frozen=True)
class OutgoingMessage:
    notification_id: str
    recipient: str
    subject: str
    text: str
    html: str | None = None


class Provider(Protocol):
    name: str
    channel: str

    def send(self, message: OutgoingMessage) -> str: ...


class EmailProvider:
    """Django's e-mail backend (EMAIL_URL: SMTP, console, or any django-anymail ESP).

    The SMTP connection is kept open per worker thread and reused: opening one costs a TCP and
    SMTP handshake per message otherwise. Any error closes it, so the next send starts clean.
    """

    channel = "email"

    def __init__(self, name: str = "email", backend: str | None = None, **backend_options: object) -> None:
        self.name = name
        self._backend = backend
        self._backend_options = backend_options
        self._local = threading.local()

    def _connection(self):  # type: ignore[no-untyped-def]
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = get_connection(self._backend, fail_silently=False, **self._backend_options)
            connection.open()
            self._local.connection = connection
        return connection

    def _discard_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - already failing; the close is best effort
                pass

    def send(self, message: OutgoingMessage) -> str:
        message_id = make_msgid(domain="eventplatform.local")
        email = EmailMultiAlternatives(
            subject=message.subject, body=message.text, to=[message.recipient],
            headers={"X-Eventplatform-Notification-Id": message.notification_id, "Message-ID": message_id},
        )
        if message.html:
            email.attach_alternative(message.html, "text/html")
        try:
            sent = self._connection().send_messages([email])
        except smtplib.SMTPRecipientsRefused as error:
            self._discard_connection()
            code, reply = next(iter(error.recipients.values()))
            raise _smtp_error(code, reply) from error
        except smtplib.SMTPResponseException as error:
            self._discard_connection()
            raise _smtp_error(error.smtp_code, error.smtp_error) from error
        except (TimeoutError, socket.timeout) as error:
            self._discard_connection()
            raise ProviderTransientError("SMTP server timed out.", code="smtp_timeout") from error
        except (OSError, smtplib.SMTPException) as error:
            self._discard_connection()
            raise ProviderTransientError(f"SMTP connection failed: {error}", code="smtp_transient") from error
        if not sent:
            raise ProviderTransientError("The e-mail backend accepted nothing.", code="smtp_transient")
        return message_id.strip("<>")


def _smtp_error(code: int, reply: bytes | str) -> Exception:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    if 400 <= code < 500:
        return ProviderTransientError(f"SMTP {code}: {text}", code="smtp_transient")
    return ProviderPermanentError(f"SMTP {code}: {text}", code="smtp_permanent")


class TwilioSmsProvider:
    """Twilio's Messages API (or anything speaking it, at SMS_API_URL)."""

    channel = "sms"

    def __init__(self, name: str = "sms", *, base_url: str, account_sid: str, auth_token: str, sender: str,
                 timeout: float = 10.0) -> None:
        self.name = name
        self.url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.auth = (account_sid, auth_token)
        self.sender = sender
        self.timeout = timeout
        self._session = requests.Session()

    def send(self, message: OutgoingMessage) -> str:
        try:
            response = self._session.post(
                self.url, data={"To": message.recipient, "From": self.sender, "Body": message.text},
                auth=self.auth, timeout=self.timeout,
            )
        except requests.RequestException as error:
            raise ProviderTransientError(f"SMS API unreachable: {type(error).__name__}", code="sms_transient") from error
        if response.status_code == 429 or response.status_code >= 500:
            raise ProviderTransientError(f"SMS API answered {response.status_code}.", code="sms_transient")
        if response.status_code >= 400:
            raise ProviderPermanentError(f"SMS API answered {response.status_code}: {response.text[:200]}",
                                         code="sms_permanent")
        try:
            return str(response.json().get("sid", ""))
        except ValueError:
            return ""


_providers: dict[str, Provider] = {}
_lock = threading.Lock()


def provider_for(channel: str) -> Provider:
    """The configured provider of a channel, built once per process."""
    with _lock:
        if channel not in _providers:
            if channel == "email":
                _providers[channel] = EmailProvider()
            elif channel == "sms":
                if not settings.SMS_API_URL:
                    raise ProviderPermanentError("SMS is not configured.", code="sms_not_configured")
                _providers[channel] = TwilioSmsProvider(
                    base_url=settings.SMS_API_URL, account_sid=settings.SMS_ACCOUNT_SID,
                    auth_token=settings.SMS_AUTH_TOKEN, sender=settings.SMS_FROM, timeout=settings.SMS_TIMEOUT_SECONDS,
                )
            else:
                raise ProviderPermanentError(f"Unknown channel {channel}.", code="invalid_recipient")
        return _providers[channel]


def reset_providers() -> None:
    """Forget built providers (tests change settings between cases)."""
    with _lock:
        _providers.clear()
