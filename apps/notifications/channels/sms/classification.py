"""The SMS channel's rows of the failure classification (apps/notifications/classification.py):
what Twilio's Messages API (or anything speaking it) answered. First matching row wins;
tests/notifications/test_classification.py drives every row against the HTTP stand-in.
"""

from __future__ import annotations

from apps.notifications.classification import ANY, ANY_4XX, ANY_5XX, D, M, P, R, Rule, S, T, U, codes

# Twilio error codes (https://www.twilio.com/docs/api/errors), in the body's `code` field.
TWILIO_AUTH = frozenset({"20003", "20005"})  # authentication failed; account not active
TWILIO_SENDER = frozenset({"21212", "21606", "21659"})  # our From number is invalid / not ours / not SMS-capable
# The number cannot receive SMS (invalid, a landline, unreachable): a bounce at once.
TWILIO_INVALID_NUMBER = frozenset({"21211", "21214", "21217", "21407", "21421", "21612", "21614"})
TWILIO_OPTED_OUT = frozenset({"21610"})  # the number replied STOP to our sender
TWILIO_MESSAGE_TEMPORARY = frozenset({"14107"})  # too many messages to this recipient in a short time

RULES: tuple[Rule, ...] = (
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
        codes(429),
        T,
        "sms_rate_limited",
        "429 with Retry-After: this send waits that long",
        frozenset({"retry_after"}),
    ),
    Rule("sms", "http", codes(429) | ANY_5XX, D, "sms_transient", "429, 5xx"),
    Rule("sms", "http", ANY, M, "sms_auth_failed", "Twilio 20003 authentication failed", TWILIO_AUTH),
    Rule("sms", "http", codes(401, 403), M, "sms_auth_failed", "401/403"),
    Rule("sms", "http", codes(404), M, "sms_misconfigured", "404: wrong SMS_API_URL or account SID"),
    Rule("sms", "http", ANY, M, "sms_misconfigured", "Twilio 21606 our From number is not ours", TWILIO_SENDER),
    Rule(
        "sms",
        "http",
        ANY,
        S,
        "sms_opted_out",
        "Twilio 21610 the number replied STOP: suppressed (opted_out)",
        TWILIO_OPTED_OUT,
    ),
    Rule(
        "sms",
        "http",
        ANY,
        R,
        "sms_invalid_number",
        "Twilio 21211 invalid To, 21614 not a mobile number: bounced, suppressed",
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
)
