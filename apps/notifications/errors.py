"""Errors of the notifications app. A provider failure carries its failure class
(apps/notifications/classification.py) as well as its stable code: the class decides what happens
next (retry this message, dead, count toward the breaker, or open the breaker as misconfigured)."""

from __future__ import annotations

from eventplatform.errors import EventPlatformError


class ProviderError(EventPlatformError):
    """A provider did not accept the message; `failure_class` says what that means for us."""

    code = "provider_error"
    failure_class = "provider_down"


class ProviderTransientError(ProviderError):
    """This message may pass later (greylisting, mailbox busy): retry it with its own backoff."""

    code = "smtp_transient"
    failure_class = "message_temporary"


class ProviderDownError(ProviderTransientError):
    """The provider is unreachable or overloaded: retry, and count toward its circuit breaker."""

    code = "provider_error"
    failure_class = "provider_down"


class ProviderPermanentError(ProviderError):
    """The provider refused this message for good: do not retry."""

    code = "invalid_recipient"
    failure_class = "message_permanent"


class ProviderMisconfiguredError(ProviderError):
    """Our account or credentials are wrong: no message can pass until an operator fixes it."""

    code = "smtp_auth_failed"
    failure_class = "provider_misconfigured"


class NotificationBusy(EventPlatformError):
    """Another worker holds the notification's claim; try again later."""

    code = "notification_busy"


class NotificationNotFound(EventPlatformError):
    """The message names a notification that does not exist."""

    code = "notification_not_found"
