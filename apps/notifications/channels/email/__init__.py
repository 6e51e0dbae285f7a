"""The e-mail channel: every kind of notification, to the registration's e-mail address, through
Django's e-mail backends (SMTP or a django-anymail ESP) with an optional fallback provider."""

from __future__ import annotations

from apps.notifications.channels import Channel
from apps.notifications.channels.email.classification import RULES
from apps.notifications.channels.email.providers import build_providers, longest_call_seconds
from apps.notifications.models import Notification
from eventplatform.addresses import normalise_email
from eventplatform.logging import mask_email

CHANNEL = Channel(
    name="email",
    kinds=frozenset(Notification.Kind.values),
    address_field="email",
    normalise=normalise_email,
    mask=mask_email,
    build_providers=build_providers,
    longest_call_seconds=longest_call_seconds,
    rules=RULES,
)
