"""An OutgoingMessage as the e-mail Django's backends send: headers, text, HTML and calendar alternatives."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import make_msgid

from apps.notifications.channels.email import mime
from apps.notifications.channels.email.calendar import calendar_part
from apps.notifications.errors import ProviderPermanentError
from apps.notifications.providers import OutgoingMessage


class Email(EmailMultiAlternatives):
    """Django's e-mail with a MIME boundary chosen by mime.new_boundary (for a message mime.py
    leaves to Django): left to itself, the stdlib draws one and compiles a regular expression per
    message to check that no line of the body equals it. A text/calendar alternative gets its
    `method` parameter (`calendar_method`), which iTIP (RFC 6047) requires and Django cannot set."""

    calendar_method = ""

    def _create_alternatives(self, msg: Any) -> Any:
        msg = super()._create_alternatives(msg)  # type: ignore[misc]  # private: django-stubs leave it out
        if msg.is_multipart():
            msg.set_boundary(mime.new_boundary())
            for part in msg.get_payload():
                if part.get_content_type() == "text/calendar" and self.calendar_method:
                    part.set_param("method", self.calendar_method)
        return msg


def email_message(message: OutgoingMessage) -> tuple[Email, str]:
    """The e-mail and its Message-ID. A bad address fails here, before the server (or an ESP)
    sees it: ProviderPermanentError `invalid_recipient`.

    From and Reply-To are the portal's (`sender_email_from`, `sender_reply_to` in the
    notification's context, apps/webhooks/senders.py), else DEFAULT_FROM_EMAIL and none. The
    return path (envelope sender) is not decided here. Confirmations, updates and cancellations
    carry their calendar entry (calendar.py) as the last alternative:
    multipart/alternative(text/plain, text/html, text/calendar), the shape Outlook and Gmail expect.
    """
    message_id = make_msgid(domain="eventplatform.local")
    sender = message.context.get("sender_email_from") or settings.DEFAULT_FROM_EMAIL
    reply_to = message.context.get("sender_reply_to")
    try:
        email = Email(
            subject=message.subject,
            body=message.text,
            from_email=sender,
            to=[message.recipient],
            reply_to=[reply_to] if reply_to else None,
            headers={"X-Eventplatform-Notification-Id": message.notification_id, "Message-ID": message_id},
        )
        if message.html:
            email.attach_alternative(message.html, "text/html")
        entry = calendar_part(kind=message.kind, context=message.context, sender=sender, recipient=message.recipient)
        if entry is not None:
            email.attach_alternative(entry.text, "text/calendar")
            email.calendar_method = entry.method
        mime.envelope_address(message.recipient, email.encoding or settings.DEFAULT_CHARSET)
    except ValueError as error:  # BadHeaderError and malformed addresses are ValueErrors
        raise ProviderPermanentError(f"Cannot address the e-mail: {error}", code="invalid_recipient") from error
    return email, message_id
