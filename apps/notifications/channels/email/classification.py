"""The e-mail channel's rows of the failure classification (apps/notifications/classification.py):
what an SMTP server replied at each stage of the conversation, and what an ESP's API answered
through django-anymail. First matching row wins; tests/notifications/test_classification.py drives
every row against a real aiosmtpd server or the HTTP stand-in.
"""

from __future__ import annotations

from apps.notifications.classification import ANY, ANY_4XX, ANY_5XX, D, M, P, R, Rule, T, U, codes

# RFC 3463 X.1.Y: addressing status, the address itself is bad (5.1.1 no such mailbox, 5.1.2 no such
# domain, 5.1.3 bad syntax, 5.1.6 moved, 5.1.10 null MX): a bounce, whether now or in a later DSN.
BAD_ADDRESS = frozenset(f"5.1.{minor}" for minor in range(11))

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
    Rule("smtp", "any", codes(421), D, "smtp_service_unavailable", "421 service not available (any stage)"),
    Rule("smtp", "starttls", codes(454), D, "smtp_tls_failed", "454 TLS not available"),
    Rule("smtp", "auth", codes(454), D, "smtp_service_unavailable", "454 temporary authentication failure"),
    Rule("smtp", "connect", ANY_4XX, D, "smtp_service_unavailable", "4xx greeting"),
    Rule("smtp", "connect", ANY_5XX, M, "smtp_sender_rejected", "554 greeting: no service for us (our IP)"),
    # --- SMTP: our account and sender
    Rule("smtp", "auth", ANY, M, "smtp_auth_failed", "AUTH not offered by the server", frozenset({"auth_unsupported"})),
    Rule("smtp", "auth", codes(530, 534, 535, 538), M, "smtp_auth_failed", "535 5.7.8 credentials invalid"),
    Rule("smtp", "any", codes(530), M, "smtp_auth_required", "530 5.7.0 authentication required (MAIL/RCPT)"),
    Rule(
        "smtp",
        "rcpt",
        codes(550, 551, 553, 554),
        M,
        "smtp_relay_denied",
        "554 5.7.1 relay access denied",
        frozenset({"relay"}),
    ),
    Rule(
        "smtp",
        "rcpt",
        codes(554),
        M,
        "smtp_relay_denied",
        "554 5.7.1 (policy: we may not send here)",
        frozenset({"5.7.1"}),
    ),
    Rule("smtp", "mail", ANY_4XX, D, "smtp_service_unavailable", "451 at MAIL FROM: server cannot take mail"),
    Rule("smtp", "mail", ANY_5XX, M, "smtp_sender_rejected", "553/554 at MAIL FROM: our sender refused"),
    # --- SMTP: this message
    Rule("smtp", "rcpt", codes(450, 451), T, "smtp_mailbox_unavailable", "450/451 greylisting, mailbox busy"),
    Rule("smtp", "rcpt", codes(452, 552), T, "smtp_mailbox_full", "452 mailbox full (552 at RCPT means 452)"),
    Rule(
        "smtp",
        "rcpt",
        codes(550, 551, 553),
        R,
        "smtp_recipient_unknown",
        "550 5.1.1 no such user (any 5.1.x: the address is bad): bounced, suppressed",
        BAD_ADDRESS,
    ),
    Rule(
        "smtp",
        "rcpt",
        codes(550, 551, 553, 554),
        P,
        "smtp_recipient_rejected",
        "550 5.7.1 at RCPT: refused by the server's policy, not for the address",
    ),
    Rule("smtp", "data", codes(450, 451, 452), T, "smtp_message_deferred", "451 at DATA: try again later"),
    Rule("smtp", "data", codes(552), P, "smtp_message_too_large", "552 message exceeds storage allocation"),
    Rule("smtp", "data", codes(550, 554), P, "smtp_message_rejected", "554 content rejected (spam, virus)"),
    Rule("smtp", "any", ANY_4XX, T, "smtp_transient", "any other 4xx"),
    Rule("smtp", "any", ANY_5XX, P, "smtp_permanent", "any other 5xx"),
    # --- e-mail service providers through django-anymail
    Rule("esp", "rcpt", ANY, R, "esp_recipient_refused", "AnymailRecipientsRefused: bounced, suppressed"),
    Rule("esp", "network", ANY, D, "esp_transient", "ESP API unreachable (no HTTP status)"),
    Rule(
        "esp",
        "http",
        codes(429),
        T,
        "esp_rate_limited",
        "429 with Retry-After: this send waits that long",
        frozenset({"retry_after"}),
    ),
    Rule("esp", "http", codes(429) | ANY_5XX, D, "esp_transient", "429, 5xx"),
    Rule("esp", "http", codes(401, 403), M, "esp_auth_failed", "401/403: API key wrong or revoked"),
    Rule("esp", "http", ANY_4XX, P, "esp_permanent", "any other 4xx (the message is invalid)"),
)
