"""The one failure classification: every way a provider can refuse, sorted into its classes.

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
- `recipient_refused`: the recipient's side refused this address or number for good at hand-over
  (550 5.1.1 at RCPT, an ESP's AnymailRecipientsRefused, Twilio's invalid-number codes). A bounce
  like the one reported an hour later (CONTRACT section 8): the notification ends `bounced` and the
  address is suppressed (delivery.notification_refused_at_handover), not `dead`;
- `recipient_opted_out`: the number replied STOP (Twilio 21610): `suppressed`, with a Suppression of
  reason `opted_out`.

Each channel owns its rows (`RULES` in apps/notifications/channels/<name>/classification.py: a
protocol belongs to one channel); the registry lists them all (`channels.rules()`, first matching
row wins within a channel). docs/notifications.md shows the same table and
tests/notifications/test_classification.py drives every row against a real aiosmtpd server or the
HTTP stand-in. A provider never decides a class itself: it describes what it saw (protocol, stage,
reply code, detail) and asks `classify` with its channel's rows. This module imports no channel:
the channels import it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from apps.notifications.errors import (
    ProviderDownError,
    ProviderError,
    ProviderMisconfiguredError,
    ProviderOutcomeUnknownError,
    ProviderPermanentError,
    ProviderRateLimitedError,
    ProviderRecipientOptedOutError,
    ProviderRecipientRefusedError,
    ProviderTransientError,
)


class FailureClass(StrEnum):
    MESSAGE_TEMPORARY = "message_temporary"
    MESSAGE_PERMANENT = "message_permanent"
    PROVIDER_DOWN = "provider_down"
    PROVIDER_MISCONFIGURED = "provider_misconfigured"
    OUTCOME_UNKNOWN = "outcome_unknown"
    RECIPIENT_REFUSED = "recipient_refused"
    RECIPIENT_OPTED_OUT = "recipient_opted_out"


T, P = FailureClass.MESSAGE_TEMPORARY, FailureClass.MESSAGE_PERMANENT
D, M = FailureClass.PROVIDER_DOWN, FailureClass.PROVIDER_MISCONFIGURED
U = FailureClass.OUTCOME_UNKNOWN
R, S = FailureClass.RECIPIENT_REFUSED, FailureClass.RECIPIENT_OPTED_OUT  # S: ends `suppressed`
# The refusals that are the recipient's answer about its address: a bounce at hand-over.
REFUSED_AT_HANDOVER = (R, S)

ERROR_TYPES: dict[FailureClass, type[ProviderError]] = {
    T: ProviderTransientError,
    P: ProviderPermanentError,
    D: ProviderDownError,
    M: ProviderMisconfiguredError,
    U: ProviderOutcomeUnknownError,
    R: ProviderRecipientRefusedError,
    S: ProviderRecipientOptedOutError,
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


def codes(*replies: int) -> frozenset[int]:
    return frozenset(replies)


# Anything no row covers (a bug, an unknown library): retrying is safe thanks to the claim,
# dropping a message is not; it counts toward the breaker so a broken provider stops being hammered.
UNCLASSIFIED = Rule("any", "any", ANY, D, "provider_error", "unexpected exception")


def classify(
    rules: Iterable[Rule],
    *,
    protocol: str,
    stage: str,
    code: int | None = None,
    details: frozenset[str] | set[str] = frozenset(),
) -> Rule:
    """The first of the channel's rows matching what the provider saw, or UNCLASSIFIED."""
    details = frozenset(details)
    for rule in rules:
        if rule.matches(protocol=protocol, stage=stage, code=code, details=details):
            return rule
    return UNCLASSIFIED


def provider_error(
    rule: Rule, message: str, *, retry_after: float | None = None, remote_status: str = "", diagnostic: str = ""
) -> ProviderError:
    """The exception for a row: its class's type, with the row's code (a rate limit with the wait asked
    for). `remote_status`/`diagnostic`: what the remote side said in its own terms (`5.1.1`, `smtp; 550
    5.1.1 No such user`; Twilio's `21211`), kept on a notification that bounced at hand-over."""
    if retry_after is not None and "retry_after" in rule.details:
        error: ProviderError = ProviderRateLimitedError(
            message, code=rule.error_code, details=rule, retry_after=retry_after
        )
    else:
        error = ERROR_TYPES[rule.failure_class](message, code=rule.error_code, details=rule)
    error.remote_status, error.diagnostic = remote_status, diagnostic
    return error


def network_error(rules: Iterable[Rule], protocol: str, condition: str, error: BaseException) -> ProviderError:
    """The error for a network condition (refused, reset, timeout, tls, ...) met by a provider."""
    rule = classify(rules, protocol=protocol, stage="network", details={condition})
    return provider_error(rule, f"{protocol} {condition}: {type(error).__name__}: {error}")


def failure_class_of(error: BaseException) -> FailureClass:
    return FailureClass(getattr(error, "failure_class", FailureClass.PROVIDER_DOWN))


def table_markdown(rules: Iterable[Rule]) -> str:
    """The rows as the markdown table in docs/notifications.md (a test keeps the two equal)."""
    lines = ["| protocol | stage | replies | detail | class | code | example |", "|---|---|---|---|---|---|---|"]
    for rule in rules:
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
