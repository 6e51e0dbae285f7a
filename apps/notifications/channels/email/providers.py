"""The e-mail channel's providers: Django's SMTP backend driven step by step (with the outcome-unknown
case at the end of DATA), any django-anymail ESP (EMAIL_BACKEND), and the fallback provider used
while the primary's breaker is open (EMAIL_FALLBACK_URL / EMAIL_FALLBACK_BACKEND).

Each describes what it saw (stage, reply code, detail) and raises what the e-mail rows of the
failure classification (classification.py beside it) give for it.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import threading

import environ
from anymail.exceptions import AnymailError, AnymailRecipientsRefused
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as SmtpBackend

from apps.notifications import classification
from apps.notifications.channels.email import mime, return_path
from apps.notifications.channels.email.classification import RULES
from apps.notifications.channels.email.message import email_message
from apps.notifications.errors import ProviderError, ProviderPermanentError
from apps.notifications.providers import OutgoingMessage, Provider, retry_after_seconds


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

    def _connection(self):
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
        # An ESP's API takes no text/calendar alternative (anymail refuses it as unsupported): there
        # the calendar entry goes as an invite.ics attachment, which mail clients also offer to add.
        esp = (self._backend or settings.EMAIL_BACKEND).startswith("anymail.")
        email, message_id = email_message(message, calendar_inline=not esp)
        opening = True  # a failure while opening is at connect, STARTTLS or AUTH
        try:
            connection = self._connection()
            opening = False
            # Django's own SMTP backend only: a subclass (one that signs with DKIM, say) may change
            # how the message is built or sent, so it gets the message through its own methods.
            sent = (
                _smtp_send(connection, email, notification_id=message.notification_id)
                if type(connection) is SmtpBackend
                else connection.send_messages([email])
            )
        except ValueError as error:  # raised while building the message, before anything was sent
            raise ProviderPermanentError(f"Cannot address the e-mail: {error}", code="invalid_recipient") from error
        except Exception as error:
            self._discard_connection()
            raise _email_failure(error, opening=opening) from error
        if not sent:
            raise classification.provider_error(classification.UNCLASSIFIED, "The e-mail backend accepted nothing.")
        return _esp_message_id(email) or message_id.strip("<>")


# RFC 3461: ask for a report of delivery, failure and delay, with the headers only (not the whole
# message) returned.
_DSN_NOTIFY = "NOTIFY=SUCCESS,FAILURE,DELAY"
_DSN_RET = "RET=HDRS"


def _smtp_send(backend: SmtpBackend, email: EmailMultiAlternatives, *, notification_id: str) -> int:
    """What Django's SMTP backend does for one message (EmailBackend._send), with the bytes from
    mime.py, step by step: MAIL, RCPT and DATA answer within EMAIL_TIMEOUT, the reply to the final
    "." gets EMAIL_DATA_TIMEOUT_SECONDS (RFC 5321 section 4.5.3.2.6: ten minutes; servers scan the
    content before answering). No reply by then, or the connection lost after the whole message was
    written, is ProviderOutcomeUnknownError: the server may have the message, so it is not retried.
    The connection is this thread's own (EmailProvider._connection), already open.

    With EMAIL_BOUNCE_ADDRESS set the envelope sender is the notification's return path (VERP,
    return_path.py; the From header stays), and when the server offers DSN the message asks for
    delivery status notifications (RFC 3461) naming it: ENVID is the same token."""
    encoding = email.encoding or settings.DEFAULT_CHARSET
    smtp = backend.connection
    assert smtp is not None, "opened by EmailProvider._connection"
    token = return_path.return_path_token(notification_id) if settings.EMAIL_BOUNCE_ADDRESS else ""
    sender = return_path.return_path_address(notification_id) or mime.envelope_sender(email.from_email, encoding)
    recipients = [mime.envelope_address(address, encoding) for address in email.recipients()]
    content = mime.message_bytes(email)
    smtp.ehlo_or_helo_if_needed()
    options = [f"SIZE={len(content)}"] if smtp.does_esmtp and smtp.has_extn("size") else []
    dsn = bool(token) and smtp.does_esmtp and smtp.has_extn("dsn")
    if dsn:
        options += [_DSN_RET, f"ENVID={return_path.xtext(token)}"]
    code, reply = smtp.mail(sender, options)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    refused = {}
    for recipient in recipients:
        code, reply = smtp.rcpt(recipient, [_DSN_NOTIFY, f"ORCPT=rfc822;{return_path.xtext(recipient)}"] if dsn else [])
        if code not in (250, 251):
            refused[recipient] = (code, reply)
    if len(refused) == len(recipients):
        raise smtplib.SMTPRecipientsRefused(refused)
    code, reply = smtp.docmd("data")
    if code != 354:
        raise smtplib.SMTPDataError(code, reply)
    body = smtplib._quote_periods(content)  # type: ignore[attr-defined]  # what SMTP.data() does
    if body[-2:] != b"\r\n":
        body += b"\r\n"
    smtp.send(body + b".\r\n")
    # From here the server has the whole message: whatever happens, it may deliver it.
    assert smtp.sock is not None, "smtp.send() raises without a socket"
    smtp.sock.settimeout(settings.EMAIL_DATA_TIMEOUT_SECONDS)
    try:
        code, reply = smtp.getreply()
    except (OSError, smtplib.SMTPServerDisconnected) as error:
        condition = "timeout" if isinstance(error, TimeoutError) or "timed out" in str(error) else "disconnected"
        rule = classification.classify(RULES, protocol="smtp", stage="data_end", details={condition})
        raise _OutcomeUnknown(
            classification.provider_error(
                rule, f"SMTP: no reply to the end of DATA ({condition}: {type(error).__name__}: {error})"
            )
        ) from error
    if smtp.sock is not None:
        smtp.sock.settimeout(backend.timeout)
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)
    return 1


class _OutcomeUnknown(Exception):
    """Carries the outcome-unknown error out of the SMTP conversation, past the generic handler."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


_ENHANCED_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}")


def _reply_details(reply: bytes | str) -> tuple[str, frozenset[str]]:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    details = set()
    enhanced = _ENHANCED_STATUS.match(text.strip())
    if enhanced:
        details.add(enhanced.group(0))
    if "relay" in text.lower():
        details.add("relay")
    return text, frozenset(details)


def _smtp_reply_error(stage: str, code: int, reply: bytes | str) -> ProviderError:
    text, details = _reply_details(reply)
    rule = classification.classify(RULES, protocol="smtp", stage=stage, code=code, details=details)
    enhanced = _ENHANCED_STATUS.match(text.strip())
    return classification.provider_error(
        rule,
        f"SMTP {code} at {stage}: {text}",
        remote_status=enhanced.group(0) if enhanced else str(code),
        diagnostic=f"smtp; {code} {text}",  # as a DSN's Diagnostic-Code says it
    )


def _email_failure(error: Exception, *, opening: bool) -> ProviderError:
    """Describe what the SMTP conversation (or the ESP) saw, and let the classification decide.

    Anymail's errors come first: its HTTP errors are also requests' (hence OSError) subclasses.
    """
    if isinstance(error, AnymailError):
        return _esp_error(error)
    if isinstance(error, _OutcomeUnknown):
        return error.error
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(error.recipients.values()))
        return _smtp_reply_error("rcpt", code, reply)
    if isinstance(error, smtplib.SMTPSenderRefused):
        return _smtp_reply_error("mail", error.smtp_code, error.smtp_error)
    if isinstance(error, smtplib.SMTPDataError):
        return _smtp_reply_error("data", error.smtp_code, error.smtp_error)
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return _smtp_reply_error("auth", error.smtp_code, error.smtp_error)
    if isinstance(error, smtplib.SMTPConnectError):
        return _smtp_reply_error("connect", error.smtp_code, error.smtp_error)
    if isinstance(error, smtplib.SMTPResponseException):  # opening: STARTTLS is the only other command
        return _smtp_reply_error("starttls" if opening else "any", error.smtp_code, error.smtp_error)
    if isinstance(error, smtplib.SMTPNotSupportedError):
        if "AUTH" in str(error):
            rule = classification.classify(RULES, protocol="smtp", stage="auth", details={"auth_unsupported"})
            return classification.provider_error(rule, f"SMTP: {error}")
        return classification.network_error(RULES, "smtp", "tls", error)
    if isinstance(error, ssl.SSLError):
        return classification.network_error(RULES, "smtp", "tls", error)
    if isinstance(error, TimeoutError):
        return classification.network_error(RULES, "smtp", "timeout", error)
    if isinstance(error, ConnectionRefusedError):
        return classification.network_error(RULES, "smtp", "refused", error)
    if isinstance(error, smtplib.SMTPServerDisconnected):  # smtplib wraps a read timeout in it
        return classification.network_error(
            RULES, "smtp", "timeout" if "timed out" in str(error) else "disconnected", error
        )
    if isinstance(error, OSError | smtplib.SMTPException):
        return classification.network_error(RULES, "smtp", "reset", error)
    return _esp_error(error)


def _esp_error(error: Exception) -> ProviderError:
    """Sort a django-anymail error by its class and HTTP status (the table in classification.py).

    Anything else (a bug, an unknown library) is UNCLASSIFIED: retried and counted toward the
    breaker; retrying is safe thanks to the claim, dropping a message is not.
    """
    status = getattr(error, "status_code", None)
    if isinstance(error, AnymailRecipientsRefused):
        rule = classification.classify(RULES, protocol="esp", stage="rcpt")
        return classification.provider_error(
            rule,
            f"ESP failed ({status or type(error).__name__}): {error}",
            remote_status=_refused_status(error),
            diagnostic=str(error)[:2000],
        )
    if isinstance(error, AnymailError):
        response = getattr(error, "response", None)
        retry_after = retry_after_seconds(response.headers.get("Retry-After")) if response is not None else None
        rule = (
            classification.classify(
                RULES,
                protocol="esp",
                stage="http",
                code=status,
                details={"retry_after"} if retry_after is not None else set(),
            )
            if isinstance(status, int)
            else classification.classify(RULES, protocol="esp", stage="network")
        )
        return classification.provider_error(
            rule, f"ESP failed ({status or type(error).__name__}): {error}", retry_after=retry_after
        )
    return classification.provider_error(
        classification.UNCLASSIFIED, f"Unexpected e-mail backend error {type(error).__name__}: {error}"
    )


def _refused_status(error: AnymailRecipientsRefused) -> str:
    """Anymail's per-recipient status of the refusal (`rejected`, `invalid`), as the ESP said it."""
    recipients = getattr(getattr(error, "email_message", None), "anymail_status", None)
    statuses = sorted({str(status.status) for status in getattr(recipients, "recipients", {}).values()})
    return ",".join(statuses) or "rejected"


def _esp_message_id(email: EmailMultiAlternatives) -> str:
    """The ESP's own id when anymail reports one (support searches the ESP's dashboard with it)."""
    status = getattr(email, "anymail_status", None)
    return str(getattr(status, "message_id", "") or "") if status is not None else ""


def _email_fallback() -> EmailProvider | None:
    """The second e-mail provider, used while the primary's breaker is open (docs/notifications.md)."""
    if settings.EMAIL_FALLBACK_BACKEND:
        return EmailProvider("email_fallback", backend=settings.EMAIL_FALLBACK_BACKEND)
    if not settings.EMAIL_FALLBACK_URL:
        return None
    config = environ.Env.email_url_config(settings.EMAIL_FALLBACK_URL)
    # Credentials "" rather than None when the URL has none: Django's SMTP backend would otherwise
    # log in to the fallback with the primary's EMAIL_HOST_USER/PASSWORD.
    options = {
        "host": config.get("EMAIL_HOST"),
        "port": config.get("EMAIL_PORT"),
        "username": config.get("EMAIL_HOST_USER") or "",
        "password": config.get("EMAIL_HOST_PASSWORD") or "",
        "use_tls": config.get("EMAIL_USE_TLS"),
        "use_ssl": config.get("EMAIL_USE_SSL"),
        "timeout": settings.EMAIL_TIMEOUT,
    }
    if config["EMAIL_BACKEND"] != "django.core.mail.backends.smtp.EmailBackend":
        options = {}
    return EmailProvider(
        "email_fallback",
        backend=config["EMAIL_BACKEND"],
        **{key: value for key, value in options.items() if value is not None},
    )


# The SMTP conversation before the end of DATA: connect, greeting, EHLO, MAIL, RCPT, DATA, each
# answering within EMAIL_TIMEOUT.
SMTP_SHORT_STEPS = 6


def longest_call_seconds() -> float:
    """The longest an e-mail send spends with its providers: each conversation's short steps, then
    the wait for the reply to the end of DATA; a misconfigured primary hands the send to the
    fallback, so two conversations when one is configured."""
    conversation = SMTP_SHORT_STEPS * settings.EMAIL_TIMEOUT + settings.EMAIL_DATA_TIMEOUT_SECONDS
    return (2 if (settings.EMAIL_FALLBACK_URL or settings.EMAIL_FALLBACK_BACKEND) else 1) * conversation


def build_providers() -> list[Provider]:
    """The e-mail providers in order of preference: the primary (EMAIL_URL / EMAIL_BACKEND), then the fallback."""
    fallback = _email_fallback()
    return [EmailProvider(), *([fallback] if fallback else [])]
