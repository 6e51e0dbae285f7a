"""The one base exception and the error-code catalogue.

Every stable error code the system emits (HTTP responses, log lines, notification records) is
declared here once, with its meaning, HTTP status where one applies, and what support should do.
docs/error-codes.md is generated from this catalogue (`python manage.py error_codes`), and a test
checks the two agree and that no code is used in the code base that is not declared here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorCode:
    code: str
    meaning: str
    action: str
    http_status: int | None = None


CATALOGUE: dict[str, ErrorCode] = {
    c.code: c
    for c in [
        # --- webhook intake
        ErrorCode("invalid_signature", "Signature headers missing or malformed, or no signature matched an active "
                  "secret of the portal.", "Check the portal uses its current whsec_ secret; rotate if leaked.", 401),
        ErrorCode("timestamp_out_of_tolerance", "webhook-timestamp is outside the allowed clock skew.",
                  "Ask the portal to fix its clock, or raise WEBHOOK_TOLERANCE_SECONDS.", 401),
        ErrorCode("unknown_portal", "No active portal has this slug.", "Create it with create_portal or activate "
                  "it in the admin.", 404),
        ErrorCode("payload_too_large", "Request body exceeds WEBHOOK_MAX_BODY_BYTES.",
                  "Ask the portal why; raise the limit if legitimate.", 413),
        ErrorCode("malformed_json", "Body is not valid UTF-8 JSON.", "Ask the portal to fix its payload.", 400),
        ErrorCode("invalid_payload", "Signed JSON that does not follow the schema; kept as a rejected event.",
                  "Look at the rejected event in the admin; the portal must resend a corrected delivery.", 422),
        ErrorCode("rate_limited", "The portal exceeded its configured request rate.",
                  "None unless persistent; raise the portal's rate limit in the admin.", 429),
        ErrorCode("method_not_allowed", "Only POST is accepted on the webhook endpoint.", "None.", 405),
        ErrorCode("length_required", "A chunked body reached a web server that cannot decode it (runserver); "
                  "gunicorn reads chunked bodies.", "Run the web process under gunicorn, or have the portal "
                  "send Content-Length.", 411),
        # --- relay and broker
        ErrorCode("broker_unavailable", "RabbitMQ unreachable or did not confirm; outbox rows are kept and "
                  "retried.", "Check RabbitMQ; nothing is lost, the relay resumes by itself."),
        ErrorCode("database_unavailable", "PostgreSQL unreachable; webhooks get 503 and nothing is stored, so "
                  "portals deliver again.", "Check PostgreSQL; processes retry by themselves.", 503),
        ErrorCode("relay_error", "Unexpected error in the relay loop; it backs off and retries.",
                  "Read the traceback; file a bug."),
        # --- workers
        ErrorCode("event_not_found", "A message names a webhook event that does not exist.",
                  "Should not happen; check database restores."),
        ErrorCode("notification_not_found", "A message names a notification that does not exist.",
                  "Should not happen; check database restores."),
        ErrorCode("notification_busy", "Another worker holds the notification; retried later.", "None."),
        ErrorCode("actor_failed", "An actor raised an unexpected error; Dramatiq retries it.",
                  "Read the traceback; file a bug if it repeats."),
        ErrorCode("smtp_transient", "SMTP server answered 4xx or the connection failed; retried.",
                  "None unless persistent: check the mail server."),
        ErrorCode("smtp_permanent", "SMTP server refused the message with 5xx (e.g. 550); not retried.",
                  "Check the recipient address; replay after correcting it."),
        ErrorCode("smtp_timeout", "SMTP server did not answer in time; retried.", "Check the mail server."),
        ErrorCode("sms_transient", "SMS API answered 429/5xx or could not be reached; retried.",
                  "None unless persistent: check the SMS provider status."),
        ErrorCode("sms_permanent", "SMS API refused the message with a 4xx other than 429; not retried.",
                  "Check the phone number and the SMS account; replay after correcting it."),
        ErrorCode("sms_not_configured", "SMS is disabled (SMS_API_URL unset).", "Configure SMS_* settings."),
        ErrorCode("esp_transient", "The e-mail service provider's API (django-anymail) answered 429/5xx or "
                  "could not be reached; retried.", "None unless persistent: check the ESP's status page."),
        ErrorCode("esp_permanent", "The e-mail service provider's API (django-anymail) refused the message with a "
                  "4xx other than 429; not retried.", "Check the ESP account and the recipient; replay after fixing."),
        ErrorCode("invalid_recipient", "Recipient address or number is missing or invalid; not retried.",
                  "Correct the attendee's data at the portal."),
        ErrorCode("retries_exhausted", "All retries were used; the notification is dead.",
                  "Fix the cause, then replay with replay_notifications or the admin action."),
        ErrorCode("circuit_open", "The provider's circuit breaker is open; the send is deferred.",
                  "None: sends resume after the cool-down. Check the provider if it lasts."),
        ErrorCode("process_exited", "A child process of run_pipeline exited; the others are stopped.",
                  "Read that process's last log lines; restart."),
        ErrorCode("library_warning", "A warning or error logged by a library (Django, Dramatiq, pika) without "
                  "a code of ours.", "Read the message; if it repeats, give it a code of its own."),
        ErrorCode("provider_error", "Unexpected provider error; treated as transient.", "Read the traceback."),
    ]
}


def describe(code: str) -> ErrorCode:
    """Fail loudly on an undeclared code, so every emitted code is documented."""
    return CATALOGUE[code]


class EventPlatformError(Exception):
    """Base of every error that carries a stable code."""

    code = "actor_failed"

    def __init__(self, message: str = "", *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message or self.__class__.__doc__ or "")
        if code is not None:
            self.code = code
        describe(self.code)
        self.message = message or (self.__class__.__doc__ or "").strip()
        self.details = details

    @property
    def http_status(self) -> int:
        return describe(self.code).http_status or 500
