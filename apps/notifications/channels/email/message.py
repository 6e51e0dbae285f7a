"""An OutgoingMessage as the e-mail Django's backends send: headers, text, HTML alternative."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import make_msgid

from apps.notifications.channels.email import mime
from apps.notifications.errors import ProviderPermanentError
from apps.notifications.providers import OutgoingMessage


class Email(EmailMultiAlternatives):
    """Django's e-mail with a MIME boundary chosen by mime.new_boundary (for a message mime.py
    leaves to Django): left to itself, the stdlib draws one and compiles a regular expression per
    message to check that no line of the body equals it."""

    def _create_alternatives(self, msg: Any) -> Any:
        msg = super()._create_alternatives(msg)  # type: ignore[misc]  # private: django-stubs leave it out
        if msg.is_multipart():
            msg.set_boundary(mime.new_boundary())
        return msg


def email_message(message: OutgoingMessage) -> tuple[Email, str]:
    """The e-mail and its Message-ID. A bad address fails here, before the server (or an ESP)
    sees it: ProviderPermanentError `invalid_recipient`."""
    message_id = make_msgid(domain="eventplatform.local")
    try:
        email = Email(
            subject=message.subject,
            body=message.text,
            to=[message.recipient],
            headers={"X-Eventplatform-Notification-Id": message.notification_id, "Message-ID": message_id},
        )
        if message.html:
            email.attach_alternative(message.html, "text/html")
        mime.envelope_address(message.recipient, email.encoding or settings.DEFAULT_CHARSET)
    except ValueError as error:  # BadHeaderError and malformed addresses are ValueErrors
        raise ProviderPermanentError(f"Cannot address the e-mail: {error}", code="invalid_recipient") from error
    return email, message_id
