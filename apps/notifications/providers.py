"""Providers behind one small interface: `send(message) -> provider message id`.

Each provider sorts its failures into ProviderTransientError (retry) and ProviderPermanentError
(do not), each with a stable error code from the catalogue.
"""

from __future__ import annotations

import smtplib
import threading
from dataclasses import dataclass
from typing import Protocol

import environ
import requests
from anymail.exceptions import AnymailError, AnymailRecipientsRefused
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
    """Django's e-mail backend (EMAIL_URL: SMTP, console, or any django-anymail ESP via EMAIL_BACKEND).

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
        try:
            email = EmailMultiAlternatives(
                subject=message.subject, body=message.text, to=[message.recipient],
                headers={"X-Eventplatform-Notification-Id": message.notification_id, "Message-ID": message_id},
            )
            if message.html:
                email.attach_alternative(message.html, "text/html")
            email.message()  # builds the headers now: a bad address fails here, before the server sees it
        except ValueError as error:  # BadHeaderError and malformed addresses are ValueErrors
            raise ProviderPermanentError(f"Cannot address the e-mail: {error}", code="invalid_recipient") from error
        try:
            sent = self._connection().send_messages([email])
        except smtplib.SMTPRecipientsRefused as error:
            self._discard_connection()
            code, reply = next(iter(error.recipients.values()))
            raise _smtp_error(code, reply, recipient_refused=True) from error
        except smtplib.SMTPResponseException as error:
            self._discard_connection()
            raise _smtp_error(error.smtp_code, error.smtp_error) from error
        except TimeoutError as error:
            self._discard_connection()
            raise ProviderTransientError("SMTP server timed out.", code="smtp_timeout") from error
        except (OSError, smtplib.SMTPException) as error:
            self._discard_connection()
            raise ProviderTransientError(f"SMTP connection failed: {error}", code="smtp_transient") from error
        except Exception as error:
            self._discard_connection()
            raise _esp_error(error) from error
        if not sent:
            raise ProviderTransientError("The e-mail backend accepted nothing.", code="smtp_transient")
        return _esp_message_id(email) or message_id.strip("<>")


def _smtp_error(code: int, reply: bytes | str, *, recipient_refused: bool = False) -> Exception:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    if 400 <= code < 500:
        return ProviderTransientError(f"SMTP {code}: {text}", code="smtp_transient")
    if recipient_refused:
        return ProviderPermanentError(f"SMTP {code} for the recipient: {text}", code="invalid_recipient")
    return ProviderPermanentError(f"SMTP {code}: {text}", code="smtp_permanent")


def _esp_error(error: Exception) -> Exception:
    """Sort a django-anymail error.

    AnymailRecipientsRefused is the ESP saying "no such recipient"; AnymailError carries the HTTP
    status: 429 and 5xx pass, other 4xx do not. Anything else (a bug, an unknown library) is treated
    as transient: retrying is safe thanks to the claim, dropping a message is not.
    """
    status = getattr(error, "status_code", None)
    if isinstance(error, AnymailRecipientsRefused):
        return ProviderPermanentError(f"ESP refused the recipient: {error}", code="invalid_recipient")
    if isinstance(error, AnymailError):
        if isinstance(status, int) and 400 <= status < 500 and status != 429:
            return ProviderPermanentError(f"ESP answered {status}: {error}", code="esp_permanent")
        return ProviderTransientError(f"ESP failed ({status or type(error).__name__}): {error}", code="esp_transient")
    return ProviderTransientError(f"Unexpected e-mail backend error {type(error).__name__}: {error}",
                                  code="provider_error")


def _esp_message_id(email: EmailMultiAlternatives) -> str:
    """The ESP's own id when anymail reports one (support searches the ESP's dashboard with it)."""
    status = getattr(email, "anymail_status", None)
    return str(getattr(status, "message_id", "") or "") if status is not None else ""


# Twilio's error codes for a number that can never receive this message.
TWILIO_INVALID_RECIPIENT = {21211, 21214, 21610, 21614}


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
        self._local = threading.local()  # requests.Session is not thread-safe: one per worker thread

    def _session(self) -> requests.Session:
        if getattr(self._local, "session", None) is None:
            self._local.session = requests.Session()
        return self._local.session

    def send(self, message: OutgoingMessage) -> str:
        try:
            response = self._session().post(
                self.url, data={"To": message.recipient, "From": self.sender, "Body": message.text},
                auth=self.auth, timeout=self.timeout,
            )
        except requests.Timeout as error:
            raise ProviderTransientError("SMS API timed out.", code="sms_transient") from error
        except requests.RequestException as error:
            raise ProviderTransientError(f"SMS API unreachable: {type(error).__name__}",
                                         code="sms_transient") from error
        if response.status_code == 429 or response.status_code >= 500:
            raise ProviderTransientError(f"SMS API answered {response.status_code}.", code="sms_transient")
        body = _json(response)
        if response.status_code >= 400:
            code = "invalid_recipient" if body.get("code") in TWILIO_INVALID_RECIPIENT else "sms_permanent"
            raise ProviderPermanentError(f"SMS API answered {response.status_code}: {response.text[:200]}", code=code)
        return str(body.get("sid", ""))


def _json(response: requests.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _email_fallback() -> EmailProvider | None:
    """The second e-mail provider, used while the primary's breaker is open (docs/notifications.md)."""
    if settings.EMAIL_FALLBACK_BACKEND:
        return EmailProvider("email_fallback", backend=settings.EMAIL_FALLBACK_BACKEND)
    if not settings.EMAIL_FALLBACK_URL:
        return None
    config = environ.Env.email_url_config(settings.EMAIL_FALLBACK_URL)
    options = {"host": config.get("EMAIL_HOST"), "port": config.get("EMAIL_PORT"),
               "username": config.get("EMAIL_HOST_USER"), "password": config.get("EMAIL_HOST_PASSWORD"),
               "use_tls": config.get("EMAIL_USE_TLS"), "use_ssl": config.get("EMAIL_USE_SSL"),
               "timeout": settings.EMAIL_TIMEOUT}
    if config["EMAIL_BACKEND"] != "django.core.mail.backends.smtp.EmailBackend":
        options = {}
    return EmailProvider("email_fallback", backend=config["EMAIL_BACKEND"],
                         **{key: value for key, value in options.items() if value is not None})


def _build(channel: str) -> list[Provider]:
    if channel == "email":
        fallback = _email_fallback()
        return [EmailProvider(), *([fallback] if fallback else [])]
    if channel == "sms":
        if not settings.SMS_API_URL:
            raise ProviderPermanentError("SMS is not configured.", code="sms_not_configured")
        return [TwilioSmsProvider(
            base_url=settings.SMS_API_URL, account_sid=settings.SMS_ACCOUNT_SID,
            auth_token=settings.SMS_AUTH_TOKEN, sender=settings.SMS_FROM, timeout=settings.SMS_TIMEOUT_SECONDS,
        )]
    raise ProviderPermanentError(f"Unknown channel {channel}.", code="invalid_recipient")


_providers: dict[str, list[Provider]] = {}
_lock = threading.Lock()


def providers_for(channel: str) -> list[Provider]:
    """The channel's providers in order of preference (primary, then fallback), built once per process."""
    with _lock:
        if channel not in _providers:
            _providers[channel] = _build(channel)
        return _providers[channel]


def provider_for(channel: str) -> Provider:
    """The channel's primary provider."""
    return providers_for(channel)[0]


def reset_providers() -> None:
    """Forget built providers (tests change settings between cases)."""
    with _lock:
        _providers.clear()
