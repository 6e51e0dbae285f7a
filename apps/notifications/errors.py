from __future__ import annotations

from eventplatform.errors import EventPlatformError


class ProviderTransientError(EventPlatformError):
    """The provider failed in a way that may pass: retry later."""

    code = "provider_error"


class ProviderPermanentError(EventPlatformError):
    """The provider refused the message for good: do not retry."""

    code = "invalid_recipient"


class NotificationBusy(EventPlatformError):
    """Another worker holds the notification's claim; try again later."""

    code = "notification_busy"


class NotificationNotFound(EventPlatformError):
    """The message names a notification that does not exist."""

    code = "notification_not_found"
