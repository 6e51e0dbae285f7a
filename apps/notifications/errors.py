"""Errors of the notifications app. A provider failure carries its failure class
(apps/notifications/classification.py) as well as its stable code: the class decides what happens
next (retry this message, dead, count toward the breaker, or open the breaker as misconfigured)."""

from __future__ import annotations

from eventplatform.errors import EventPlatformError


class ProviderError(EventPlatformError):
    """A provider did not accept the message; `failure_class` says what that means for us."""

    code = "provider_error"
    failure_class = "provider_down"
    # What the remote side said in its own terms (classification.provider_error): the enhanced
    # status or Twilio code, and its reply; empty when it said nothing (a timeout).
    remote_status = ""
    diagnostic = ""


class ProviderTransientError(ProviderError):
    """This message may pass later (greylisting, mailbox busy): retry it with its own backoff."""

    code = "smtp_transient"
    failure_class = "message_temporary"


class ProviderDownError(ProviderTransientError):
    """The provider is unreachable or overloaded: retry, and count toward its circuit breaker."""

    code = "provider_error"
    failure_class = "provider_down"


class ProviderRateLimitedError(ProviderTransientError):
    """The provider asked us to slow down (429 with Retry-After): this send waits that long; the
    provider is working, so its breaker is not touched."""

    code = "sms_rate_limited"
    failure_class = "message_temporary"

    def __init__(
        self,
        message: str = "",
        *,
        retry_after: float,
        code: str | None = None,
        details: object = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.retry_after = retry_after


class ProviderOutcomeUnknownError(ProviderError):
    """The whole message reached the provider and its answer never came: it may have been accepted.
    Never retried (that is how a slow server got every message twice); staff decide."""

    code = "outcome_unknown"
    failure_class = "outcome_unknown"


class ProviderPermanentError(ProviderError):
    """The provider refused this message for good: do not retry."""

    code = "invalid_recipient"
    failure_class = "message_permanent"


class ProviderRecipientRefusedError(ProviderPermanentError):
    """The recipient's side refused the address or number for good when we handed the message over
    (550 5.1.1 at RCPT): a bounce at once, which ends `bounced` and suppresses the address."""

    code = "smtp_recipient_unknown"
    failure_class = "recipient_refused"


class ProviderRecipientOptedOutError(ProviderPermanentError):
    """The number opted out (replied STOP; Twilio 21610): `suppressed`, with reason `opted_out`."""

    code = "sms_opted_out"
    failure_class = "recipient_opted_out"


class ProviderMisconfiguredError(ProviderError):
    """Our account or credentials are wrong: no message can pass until an operator fixes it."""

    code = "smtp_auth_failed"
    failure_class = "provider_misconfigured"


class NotificationBusy(EventPlatformError):
    """Another worker holds the notification's claim; try again later."""

    code = "notification_busy"


class SentNotRecorded(EventPlatformError):
    """The provider accepted the message and `sent` could not be written before the claim expires."""

    code = "sent_not_recorded"
