"""The SMS channel: confirmations, cancellations and the one-hour reminder, to the registration's
phone number, through Twilio's Messages API (SMS_API_URL) or, in the embedded default, the console."""

from __future__ import annotations

from django.conf import settings

from apps.notifications.channels import Channel
from apps.notifications.channels.sms.classification import RULES
from apps.notifications.channels.sms.console import ConsoleSmsProvider
from apps.notifications.channels.sms.twilio import TwilioSmsProvider
from apps.notifications.errors import ProviderPermanentError
from apps.notifications.models import Notification
from apps.notifications.providers import Provider
from eventplatform.addresses import normalise_phone
from eventplatform.logging import mask_phone

KINDS = frozenset({Notification.Kind.CONFIRMATION, Notification.Kind.CANCELLATION, Notification.Kind.REMINDER_1H})


def enabled() -> bool:
    return bool(settings.SMS_API_URL or settings.SMS_CONSOLE)


def build_providers() -> list[Provider]:
    """Twilio's API at SMS_API_URL; the console only when no API is configured (SMS_CONSOLE)."""
    if settings.SMS_CONSOLE and not settings.SMS_API_URL:
        return [ConsoleSmsProvider()]
    if not settings.SMS_API_URL:
        raise ProviderPermanentError("SMS is not configured.", code="sms_not_configured")
    return [
        TwilioSmsProvider(
            base_url=settings.SMS_API_URL,
            account_sid=settings.SMS_ACCOUNT_SID,
            auth_token=settings.SMS_AUTH_TOKEN,
            sender=settings.SMS_FROM,
            timeout=settings.SMS_TIMEOUT_SECONDS,
        )
    ]


def longest_call_seconds() -> float:
    """The request, then the listing that asks whether an unanswered one arrived (twilio._find_sent)."""
    return 2 * settings.SMS_TIMEOUT_SECONDS


CHANNEL = Channel(
    name="sms",
    kinds=KINDS,
    address_field="phone",
    normalise=normalise_phone,
    mask=mask_phone,
    build_providers=build_providers,
    longest_call_seconds=longest_call_seconds,
    rules=RULES,
    enabled=enabled,
    text_template="sms.txt",
)
