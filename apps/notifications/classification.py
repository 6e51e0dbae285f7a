"""The one failure classification: every way a provider can refuse, sorted into four classes.

- `message_temporary`: this message is retried with its own backoff (Dramatiq retries); the
  provider's breaker is not touched;
- `message_permanent`: the notification is `dead` at once with the row's code;
- `provider_down`: retried like a temporary failure, and counted toward the provider's breaker;
  once the breaker is open, sends wait in PostgreSQL without using attempts;
- `provider_misconfigured`: the breaker opens at once in state `misconfigured` (with the reason),
  the fallback provider is tried, an alert fires; sends wait (never `dead`) while a probe runs every
  NOTIFICATION_BREAKER_MISCONFIGURED_PROBE_SECONDS until one succeeds;
- `outcome_unknown`: the whole message reached the provider and no answer came (no reply to the
  final "." within EMAIL_DATA_TIMEOUT_SECONDS; an SMS request unanswered whose provider could not
  be asked whether it took it). Never retried: the notification is `dead` with code
  `outcome_unknown` for staff to check and replay; the breaker is not touched.

`RULES` is the table (first matching row wins); docs/notifications.md shows the same table and
tests/notifications/test_classification.py drives every row against a real aiosmtpd server or the
HTTP stand-in. A provider never decides a class itself: it describes what it saw (protocol, stage,
reply code, detail) and asks `classify`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from apps.notifications.errors import (
    ProviderDownError,
    ProviderError,
    ProviderMisconfiguredError,
    ProviderOutcomeUnknownError,
    ProviderPermanentError,
    ProviderRateLimitedError,
    ProviderTransientError,
)


class FailureClass(StrEnum):
    MESSAGE_TEMPORARY = "message_temporary"
    MESSAGE_PERMANENT = "message_permanent"
    PROVIDER_DOWN = "provider_down"
    PROVIDER_MISCONFIGURED = "provider_misconfigured"
    OUTCOME_UNKNOWN = "outcome_unknown"


T, P = FailureClass.MESSAGE_TEMPORARY, FailureClass.MESSAGE_PERMANENT
D, M = FailureClass.PROVIDER_DOWN, FailureClass.PROVIDER_MISCONFIGURED
U = FailureClass.OUTCOME_UNKNOWN

ERROR_TYPES: dict[FailureClass, type[ProviderError]] = {
    T: ProviderTransientError,
    P: ProviderPermanentError,
    D: ProviderDownError,
    M: ProviderMisconfiguredError,
    U: ProviderOutcomeUnknownError,
}

ANY_4XX = frozenset(range(400, 500))
ANY_5XX = frozenset(range(500, 600))
ANY: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Rule:
    """One row. `codes` are SMTP reply codes or HTTP statuses (empty: any); `details` are extra
    facts a provider reports (a network condition, an enhanced status code such as 5.7.1 or the word
    `relay` in the reply, Twilio's error code); a row with details matches only when one is present."""

    protocol: str  # smtp | sms | esp
    stage: str  # network | connect | starttls | auth | mail | rcpt | data | data_end | http | sent | any
    codes: frozenset[int]
    failure_class: FailureClass
    error_code: str
    example: str
    details: frozenset[str] = frozenset()

    def matches(self, *, protocol: str, stage: str, code: int | None, details: frozenset[str]) -> bool:
        return (
            self.protocol == protocol
            and self.stage in ("any", stage)
            and (not self.codes or code in self.codes)
            and (not self.details or bool(self.details & details))
        )


def _codes(*codes: int) -> frozenset[int]:
    return frozenset(codes)


# Twilio error codes (https://www.twilio.com/docs/api/errors), in the body's `code` field.
TWILIO_AUTH = frozenset({"20003", "20005"})  # authentication failed; account not active
TWILIO_SENDER = frozenset({"21212", "21606", "21659"})  # our From number is invalid / not ours / not SMS-capable
TWILIO_INVALID_NUMBER = frozenset({"21211", "21214", "21217", "21407", "21421", "21610", "21612", "21614"})
TWILIO_MESSAGE_TEMPORARY = frozenset({"14107"})  # too many messages to this recipient in a short time

RULES: tuple[Rule, ...] = (
    # --- SMTP: the whole message was written (final "." included) and no reply came
    Rule(
        "smtp",
        "data_end",
        ANY,
        U,
        "outcome_unknown",
        "no reply to the final '.' within EMAIL_DATA_TIMEOUT_SECONDS, or the connection closed before it",
        frozenset({"timeout", "disconnected", "reset"}),
    ),
    # --- SMTP: the connection itself
    Rule(
        "smtp",
        "network",
        ANY,
        D,
        "smtp_connection_failed",
        "connection refused / reset / closed",
        frozenset({"refused", "reset", "disconnected"}),
    ),
    Rule("smtp", "network", ANY, D, "smtp_timeout", "no answer within EMAIL_TIMEOUT", frozenset({"timeout"})),
    Rule(
        "smtp", "network", ANY, D, "smtp_tls_failed", "TLS handshake failed, STARTTLS not offered", frozenset({"tls"})
    ),
    Rule("smtp", "any", _codes(421), D, "smtp_service_unavailable", "421 service not available (any stage)"),
    Rule("smtp", "starttls", _codes(454), D, "smtp_tls_failed", "454 TLS not available"),
    Rule("smtp", "auth", _codes(454), D, "smtp_service_unavailable", "454 temporary authentication failure"),
    Rule("smtp", "connect", ANY_4XX, D, "smtp_service_unavailable", "4xx greeting"),
    Rule("smtp", "connect", ANY_5XX, M, "smtp_sender_rejected", "554 greeting: no service for us (our IP)"),
    # --- SMTP: our account and sender
    Rule("smtp", "auth", ANY, M, "smtp_auth_failed", "AUTH not offered by the server", frozenset({"auth_unsupported"})),
    Rule("smtp", "auth", _codes(530, 534, 535, 538), M, "smtp_auth_failed", "535 5.7.8 credentials invalid"),
    Rule("smtp", "any", _codes(530), M, "smtp_auth_required", "530 5.7.0 authentication required (MAIL/RCPT)"),
    Rule(
        "smtp",
        "rcpt",
        _codes(550, 551, 553, 554),
        M,
        "smtp_relay_denied",
        "554 5.7.1 relay access denied",
        frozenset({"relay"}),
    ),
    Rule(
        "smtp",
        "rcpt",
        _codes(554),
        M,
        "smtp_relay_denied",
        "554 5.7.1 (policy: we may not send here)",
        frozenset({"5.7.1"}),
    ),
    Rule("smtp", "mail", ANY_4XX, D, "smtp_service_unavailable", "451 at MAIL FROM: server cannot take mail"),
    Rule("smtp", "mail", ANY_5XX, M, "smtp_sender_rejected", "553/554 at MAIL FROM: our sender refused"),
    # --- SMTP: this message
    Rule("smtp", "rcpt", _codes(450, 451), T, "smtp_mailbox_unavailable", "450/451 greylisting, mailbox busy"),
    Rule("smtp", "rcpt", _codes(452, 552), T, "smtp_mailbox_full", "452 mailbox full (552 at RCPT means 452)"),
    Rule("smtp", "rcpt", _codes(550, 551, 553, 554), P, "smtp_recipient_rejected", "550 5.1.1 no such user"),
    Rule("smtp", "data", _codes(450, 451, 452), T, "smtp_message_deferred", "451 at DATA: try again later"),
    Rule("smtp", "data", _codes(552), P, "smtp_message_too_large", "552 message exceeds storage allocation"),
    Rule("smtp", "data", _codes(550, 554), P, "smtp_message_rejected", "554 content rejected (spam, virus)"),
    Rule("smtp", "any", ANY_4XX, T, "smtp_transient", "any other 4xx"),
    Rule("smtp", "any", ANY_5XX, P, "smtp_permanent", "any other 5xx"),
    # --- SMS API (Twilio's Messages API)
    Rule(
        "sms",
        "sent",
        ANY,
        U,
        "outcome_unknown",
        "request sent, no answer in SMS_TIMEOUT_SECONDS, and the message listing could not be asked whether it arrived",
    ),
    Rule("sms", "network", ANY, D, "sms_transient", "timeout, connection refused"),
    Rule(
        "sms",
        "http",
        _codes(429),
        T,
        "sms_rate_limited",
        "429 with Retry-After: this send waits that long",
        frozenset({"retry_after"}),
    ),
    Rule("sms", "http", _codes(429) | ANY_5XX, D, "sms_transient", "429, 5xx"),
    Rule("sms", "http", ANY, M, "sms_auth_failed", "Twilio 20003 authentication failed", TWILIO_AUTH),
    Rule("sms", "http", _codes(401, 403), M, "sms_auth_failed", "401/403"),
    Rule("sms", "http", _codes(404), M, "sms_misconfigured", "404: wrong SMS_API_URL or account SID"),
    Rule("sms", "http", ANY, M, "sms_misconfigured", "Twilio 21606 our From number is not ours", TWILIO_SENDER),
    Rule(
        "sms",
        "http",
        ANY,
        P,
        "sms_invalid_number",
        "Twilio 21211 invalid To, 21610 unsubscribed, 21614",
        TWILIO_INVALID_NUMBER,
    ),
    Rule(
        "sms",
        "http",
        ANY,
        T,
        "sms_recipient_rate_limited",
        "Twilio 14107 too many to this recipient",
        TWILIO_MESSAGE_TEMPORARY,
    ),
    Rule("sms", "http", ANY_4XX, P, "sms_permanent", "any other 4xx"),
    # --- e-mail service providers through django-anymail
    Rule("esp", "rcpt", ANY, P, "invalid_recipient", "AnymailRecipientsRefused"),
    Rule("esp", "network", ANY, D, "esp_transient", "ESP API unreachable (no HTTP status)"),
    Rule(
        "esp",
        "http",
        _codes(429),
        T,
        "esp_rate_limited",
        "429 with Retry-After: this send waits that long",
        frozenset({"retry_after"}),
    ),
    Rule("esp", "http", _codes(429) | ANY_5XX, D, "esp_transient", "429, 5xx"),
    Rule("esp", "http", _codes(401, 403), M, "esp_auth_failed", "401/403: API key wrong or revoked"),
    Rule("esp", "http", ANY_4XX, P, "esp_permanent", "any other 4xx (the message is invalid)"),
)

# Anything no row covers (a bug, an unknown library): retrying is safe thanks to the claim,
# dropping a message is not; it counts toward the breaker so a broken provider stops being hammered.
UNCLASSIFIED = Rule("any", "any", ANY, D, "provider_error", "unexpected exception")


def classify(
    *,
    protocol: str,
    stage: str,
    code: int | None = None,
    details: frozenset[str] | set[str] = frozenset(),
) -> Rule:
    """The first row matching what the provider saw, or UNCLASSIFIED."""
    details = frozenset(details)
    for rule in RULES:
        if rule.matches(protocol=protocol, stage=stage, code=code, details=details):
            return rule
    return UNCLASSIFIED


def provider_error(rule: Rule, message: str, *, retry_after: float | None = None) -> ProviderError:
    """The exception for a row: its class's type, with the row's code (a rate limit with the wait asked for)."""
    if retry_after is not None and "retry_after" in rule.details:
        return ProviderRateLimitedError(message, code=rule.error_code, details=rule, retry_after=retry_after)
    return ERROR_TYPES[rule.failure_class](message, code=rule.error_code, details=rule)


def failure_class_of(error: BaseException) -> FailureClass:
    return FailureClass(getattr(error, "failure_class", FailureClass.PROVIDER_DOWN))


def table_markdown() -> str:
    """RULES as the markdown table in docs/notifications.md (a test keeps the two equal)."""
    lines = ["| protocol | stage | replies | detail | class | code | example |", "|---|---|---|---|---|---|---|"]
    for rule in RULES:
        lines.append(
            f"| {rule.protocol} | {rule.stage} | {_describe_codes(rule.codes)} | "
            f"{', '.join(sorted(rule.details)) or '—'} | `{rule.failure_class}` | `{rule.error_code}` | "
            f"{rule.example} |"
        )
    return "\n".join(lines)


def _describe_codes(codes: frozenset[int]) -> str:
    if not codes:
        return "any"
    parts = []
    for low, label in ((400, "4xx"), (500, "5xx")):
        block = frozenset(range(low, low + 100))
        if block <= codes:
            parts.append(label)
            codes = codes - block
    return ", ".join([*(str(c) for c in sorted(codes)), *parts])
