"""Which channels a notification kind goes by, and to which recipient: rules of this app.

Registrations describe what happened (kind, state); these rules turn it into (channel, recipient).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from apps.notifications.models import Notification
from eventplatform.addresses import normalise_email, normalise_phone

SMS_KINDS = (Notification.Kind.CONFIRMATION, Notification.Kind.CANCELLATION, Notification.Kind.REMINDER_1H)


def channels_for(kind: str, state: dict[str, Any]) -> list[str]:
    """Channels with a recipient. A cancellation seen before its registration's data has none yet;
    the notifications are recomputed from the whole log on every event, so it is created as soon
    as an event brings the address."""
    channels = [Notification.Channel.EMAIL.value] if state.get("email") else []
    if kind in SMS_KINDS and state.get("phone") and (settings.SMS_API_URL or settings.SMS_CONSOLE):
        channels.append(Notification.Channel.SMS.value)
    return channels


def recipient_for(channel: str, state: dict[str, Any]) -> str:
    """The address in its one normal form (eventplatform.addresses), as validated and erased."""
    if channel == Notification.Channel.SMS:
        return normalise_phone(state.get("phone"))
    return normalise_email(state.get("email") or "")
