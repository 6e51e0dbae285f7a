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
        ErrorCode(
            "invalid_signature",
            "Signature headers missing or malformed, or no signature matched an active secret of the portal.",
            "Check the portal uses its current whsec_ secret; rotate if leaked.",
            401,
        ),
        ErrorCode(
            "timestamp_out_of_tolerance",
            "webhook-timestamp is outside the allowed clock skew.",
            "Ask the portal to fix its clock, or raise WEBHOOK_TOLERANCE_SECONDS.",
            401,
        ),
        ErrorCode(
            "unknown_portal",
            "No active portal has this slug.",
            "Create it with create_portal or activate it in the admin.",
            404,
        ),
        ErrorCode(
            "payload_too_large",
            "Request body exceeds WEBHOOK_MAX_BODY_BYTES.",
            "Ask the portal why; raise the limit if legitimate.",
            413,
        ),
        ErrorCode("malformed_json", "Body is not valid UTF-8 JSON.", "Ask the portal to fix its payload.", 400),
        ErrorCode(
            "invalid_payload",
            "Signed JSON that does not follow the schema; kept as a rejected event.",
            "Look at the rejected event in the admin; the portal must resend a corrected delivery.",
            422,
        ),
        ErrorCode(
            "rate_limited",
            "The portal exceeded its configured request rate.",
            "None unless persistent; raise the portal's rate limit in the admin.",
            429,
        ),
        ErrorCode(
            "method_not_allowed",
            "The endpoint does not take this HTTP method (the webhook endpoint and provider callbacks: only POST).",
            "None.",
            405,
        ),
        # --- any other endpoint: what Django answers by itself, with the same JSON error body
        ErrorCode(
            "bad_request",
            "A request that could not be read: a form over DATA_UPLOAD_MAX_MEMORY_SIZE or with too many "
            "fields, a form not in UTF-8, a malformed multipart body, a Host not in ALLOWED_HOSTS.",
            "None; if a provider sends it, look at what it sent.",
            400,
        ),
        ErrorCode("forbidden", "Refused outside the admin (e.g. a missing CSRF token).", "None.", 403),
        ErrorCode("not_found", "No endpoint at this path (or a notification id that is no uuid).", "None.", 404),
        ErrorCode(
            "length_required",
            "A chunked body reached a web server that cannot decode it (runserver); gunicorn reads chunked bodies.",
            "Run the web process under gunicorn, or have the portal send Content-Length.",
            411,
        ),
        # --- relay and broker
        ErrorCode(
            "broker_unavailable",
            "RabbitMQ unreachable or did not confirm; outbox rows are kept and retried.",
            "Check RabbitMQ; nothing is lost, the relay resumes by itself.",
        ),
        ErrorCode(
            "database_unavailable",
            "PostgreSQL unreachable; webhooks get 503 and nothing is stored, so portals deliver again.",
            "Check PostgreSQL; processes retry by themselves.",
            503,
        ),
        ErrorCode(
            "outbox_message_rejected",
            "RabbitMQ returned (no such queue) or nacked (e.g. a full queue "
            "rejecting publishes) an outbox row; the rest of its batch is published, the row is retried "
            "with a growing delay (5 s doubling to 10 min).",
            "Check the queue named in the log line exists and accepts messages; the row goes out by itself.",
        ),
        ErrorCode(
            "relay_error",
            "Unexpected error in the relay loop; it backs off and retries.",
            "Read the traceback; file a bug.",
        ),
        # --- workers
        ErrorCode(
            "poison_message",
            "A message was delivered more than BROKER_MAX_DELIVERIES times (its worker "
            "process died on it each time); it was dead-lettered to the queue's .XQ without running.",
            "Find why the actor kills its process (memory, native crash); the message is in .XQ and "
            "in the outbox_messageredelivery table.",
        ),
        ErrorCode(
            "event_not_found",
            "A message names a webhook event that does not exist.",
            "Should not happen; check database restores.",
        ),
        ErrorCode("notification_busy", "Another worker holds the notification; retried later.", "None."),
        ErrorCode(
            "actor_failed",
            "An actor raised an unexpected error; Dramatiq retries it.",
            "Read the traceback; file a bug if it repeats.",
        ),
        ErrorCode(
            "smtp_transient",
            "message_temporary: an SMTP 4xx no other row covers; retried.",
            "None unless persistent: check the mail server.",
        ),
        ErrorCode(
            "smtp_permanent",
            "message_permanent: an SMTP 5xx no other row covers; dead.",
            "Check the recipient address; replay after correcting it.",
        ),
        ErrorCode(
            "smtp_timeout",
            "provider_down: the SMTP server did not answer in time; retried, counts toward the breaker.",
            "Check the mail server.",
        ),
        ErrorCode(
            "sms_transient",
            "provider_down: the SMS API answered 429/5xx, timed out or could not be "
            "reached; retried, counts toward the breaker.",
            "None unless persistent: check the SMS provider status.",
        ),
        ErrorCode(
            "sms_permanent",
            "message_permanent: the SMS API refused the message with a 4xx no other row covers; dead.",
            "Check the phone number and the SMS account; replay after correcting it.",
        ),
        ErrorCode("sms_not_configured", "SMS is disabled (SMS_API_URL unset).", "Configure SMS_* settings."),
        ErrorCode(
            "esp_transient",
            "provider_down: the e-mail service provider's API (django-anymail) answered "
            "429/5xx or could not be reached; retried, counts toward the breaker.",
            "None unless persistent: check the ESP's status page.",
        ),
        ErrorCode(
            "esp_permanent",
            "message_permanent: the e-mail service provider's API (django-anymail) refused "
            "the message with a 4xx other than 401/403/429; dead.",
            "Check the ESP account and the recipient; replay after fixing.",
        ),
        ErrorCode(
            "invalid_recipient",
            "Recipient address or number is missing or invalid; not retried.",
            "Correct the attendee's data at the portal.",
        ),
        ErrorCode(
            "superseded",
            "A pending update e-mail was cancelled because a newer update of the same "
            "registration was created before it was sent; the newer one states the registration as it is.",
            "None.",
        ),
        ErrorCode(
            "erased",
            "The notification was cancelled by an erasure request (erase_attendee) before it "
            "was sent; its recipient and content are erased.",
            "None: the person asked to be forgotten.",
        ),
        ErrorCode(
            "retries_exhausted",
            "All retries were used; the notification is dead.",
            "Fix the cause, then replay with replay_notifications or the admin action.",
        ),
        ErrorCode(
            "circuit_open",
            "The provider's circuit breaker is open; the send waits in PostgreSQL (no "
            "attempt used) and is woken when a probe closes the breaker.",
            "None: sends resume after the cool-down. Check the provider if it lasts.",
        ),
        ErrorCode(
            "process_exited",
            "A child process of run_pipeline exited; the others are stopped.",
            "Read that process's last log lines; restart.",
        ),
        # --- bounce receiver (run_bounce_receiver, docs/deploy.md)
        ErrorCode(
            "bounce_unusable",
            "Mail at the bounce address that reports nothing usable (an auto-reply, garbage, a report "
            "naming no notification of ours); accepted with 250 and counted, nothing recorded.",
            "None, unless it is frequent: then look at what the MTA routes to the receiver.",
        ),
        ErrorCode(
            "bounce_recipient_refused",
            "RCPT to an address other than the bounce address and its tokens: refused with 550 (the "
            "receiver relays nothing).",
            "None; if real reports are refused, check EMAIL_BOUNCE_ADDRESS matches the MTA's routing.",
        ),
        ErrorCode(
            "bounce_forged_token",
            "RCPT to a bounce address whose token does not verify (forged, or signed with a SECRET_KEY "
            "no longer in SECRET_KEY_FALLBACKS): refused with 550, nothing recorded.",
            "After a SECRET_KEY rotation keep the old key in SECRET_KEY_FALLBACKS for a few days.",
        ),
        ErrorCode(
            "bounce_receiver_error",
            "The bounce receiver failed on one message (a bug): answered 451, the MTA retries it.",
            "Read the traceback in the receiver's log; report it.",
        ),
        ErrorCode(
            "embedded_default",
            "run_pipeline runs on the embedded default (SQLite file, in-process broker, "
            "console e-mail and SMS): for trying it out, not for production.",
            "Set DATABASE_URL and BROKER_URL (docs/deploy.md, Go to production).",
        ),
        ErrorCode(
            "library_warning",
            "A warning or error logged by a library (Django, Dramatiq, pika) without a code of ours.",
            "Read the message; if it repeats, give it a code of its own.",
        ),
        # --- failed applies, the sweeper and the scheduler (docs/failures.md)
        ErrorCode(
            "apply_retries_exhausted",
            "A webhook event's apply failed on every retry (e.g. PostgreSQL down "
            "longer than the backoffs); recorded as a failed apply.",
            "Fix the cause, then re-apply: `reapply_events --all --reason ...` or the admin action on Failed applies.",
        ),
        ErrorCode(
            "apply_error",
            "A webhook event's apply raised an error that retrying cannot fix (a bug); "
            "recorded as a failed apply at once.",
            "Read the message and traceback; deploy the fix, then re-apply it from the admin or with `reapply_events`.",
        ),
        ErrorCode(
            "reapply_refused",
            "A re-apply named an event that does not exist (and never failed) or was "
            "rejected: there is nothing to apply.",
            "Check the event id; rejected deliveries must be sent again, corrected, by the portal.",
        ),
        ErrorCode(
            "apply_rescued",
            "The sweeper found an accepted event still unapplied long after its message "
            "was published (the message was lost) and re-enqueued it.",
            "None if rare; if it repeats, look for lost messages (RabbitMQ restarts, the workers' logs).",
        ),
        ErrorCode(
            "scheduler_job_failed",
            "A periodic job of the scheduler (send_reminders --every) raised; the "
            "loop goes on and runs it again next time.",
            "Read the traceback; the heartbeat in SchedulerHeartbeat shows the last error.",
        ),
        ErrorCode(
            "projection_drift",
            "rebuild_registrations --verify found a registration whose stored state differs from its folded event log.",
            "Run rebuild_registrations for it (or the admin "
            "action), and find what wrote the projection outside registration_apply.",
        ),
        ErrorCode(
            "provider_error",
            "Unexpected provider error; treated as provider_down (retried, counts toward the breaker).",
            "Read the traceback.",
        ),
        # --- wording edited in the admin (apps/notifications/message_templates.py)
        ErrorCode(
            "template_refused",
            "A message template version was not saved: a part does not compile in the safe engine, uses a "
            "tag or variable that is not allowed, does not render with the sample, or makes too long an SMS.",
            "Read the message on the page (it names the part and the line) and correct the template.",
        ),
        ErrorCode(
            "template_test_send_failed",
            "A staff member's test send of a message template did not go out: their user has no e-mail "
            "address, or the e-mail provider refused it.",
            "Add an e-mail address to the user, or look at the provider's reply in the message.",
        ),
        # --- notification failure classification (apps/notifications/channels/<name>/classification.py)
        ErrorCode(
            "smtp_connection_failed",
            "provider_down: the SMTP server refused, reset or closed the "
            "connection; retried, counts toward the breaker.",
            "Check the mail server is up and reachable.",
        ),
        ErrorCode(
            "smtp_tls_failed",
            "provider_down: TLS handshake failed, STARTTLS not offered or 454 TLS not "
            "available; retried, counts toward the breaker.",
            "Check the mail server's TLS setup and EMAIL_URL's scheme (smtp+tls / smtps).",
        ),
        ErrorCode(
            "smtp_service_unavailable",
            "provider_down: 421 (any stage), a 4xx greeting, 4xx at MAIL FROM "
            "or 454 at AUTH; retried, counts toward the breaker.",
            "None unless persistent: check the mail server's load and logs.",
        ),
        ErrorCode(
            "smtp_auth_failed",
            "provider_misconfigured: AUTH refused (535, 534, 538) or not offered; "
            "the breaker opens as misconfigured, sends wait (never dead) until a probe succeeds.",
            "Fix EMAIL_URL's user/password (or the server's account); sends resume by themselves.",
        ),
        ErrorCode(
            "smtp_auth_required",
            "provider_misconfigured: 530 authentication required; sends wait until a probe succeeds.",
            "Give EMAIL_URL credentials (smtp+tls://user:pass@host:587).",
        ),
        ErrorCode(
            "smtp_relay_denied",
            "provider_misconfigured: the server will not relay for our sender "
            "(554 5.7.1, 'relay access denied' at RCPT); sends wait until a probe succeeds.",
            "Allow our host/sender to relay, or authenticate; sends resume by themselves.",
        ),
        ErrorCode(
            "smtp_sender_rejected",
            "provider_misconfigured: 5xx at MAIL FROM or a 5xx greeting (our "
            "sender address or IP refused); sends wait until a probe succeeds.",
            "Fix DEFAULT_FROM_EMAIL or the server's policy for our IP.",
        ),
        ErrorCode(
            "smtp_mailbox_unavailable",
            "message_temporary: 450/451 at RCPT (greylisting, mailbox busy); "
            "this message is retried with its own backoff.",
            "None: greylisting passes on retry.",
        ),
        ErrorCode(
            "smtp_mailbox_full",
            "message_temporary: 452 (or 552) at RCPT, the mailbox is full; retried.",
            "None unless it ends dead: ask the attendee to free their mailbox, then replay.",
        ),
        ErrorCode("smtp_message_deferred", "message_temporary: 450/451/452 after DATA; retried.", "None."),
        ErrorCode(
            "smtp_recipient_unknown",
            "recipient_refused: 550/551/553 with 5.1.x at RCPT (no such user or domain, bad address): a "
            "bounce at once; the notification ends `bounced` and the address is suppressed.",
            "Ask the attendee or the portal for the right address (an update webhook corrects it), then replay.",
        ),
        ErrorCode(
            "smtp_recipient_rejected",
            "message_permanent: 550/551/553/554 at RCPT for another reason than a bad address (policy, 5.7.x); dead.",
            "Read the reply in the attempt: often our sender's reputation or SPF/DKIM; fix, then replay.",
        ),
        ErrorCode(
            "esp_recipient_refused",
            "recipient_refused: the ESP refused every recipient (AnymailRecipientsRefused: invalid, or on its "
            "own suppression list after an earlier bounce or complaint); `bounced`, the address suppressed.",
            "Ask for a corrected address; if the ESP's own list holds it, remove it there too before a replay.",
        ),
        ErrorCode(
            "sms_opted_out",
            "recipient_opted_out: Twilio 21610, the number replied STOP to our sender; `suppressed` with a "
            "Suppression of reason opted_out.",
            "None: the attendee asked for no SMS. Lift only if they texted START and asked for them again.",
        ),
        ErrorCode(
            "smtp_message_too_large",
            "message_permanent: 552 after DATA (exceeds storage allocation); dead.",
            "Shrink the template; replay.",
        ),
        ErrorCode(
            "smtp_message_rejected",
            "message_permanent: 550/554 after DATA (content rejected as spam or policy); dead.",
            "Read the reply in last_error_message; fix the template, then replay.",
        ),
        ErrorCode(
            "sms_auth_failed",
            "provider_misconfigured: the SMS API answered 401/403 or Twilio 20003/"
            "20005; sends wait (never dead) until a probe succeeds.",
            "Fix SMS_ACCOUNT_SID/SMS_AUTH_TOKEN.",
        ),
        ErrorCode(
            "sms_misconfigured",
            "provider_misconfigured: 404 (wrong SMS_API_URL or account) or our From "
            "number refused (Twilio 21212/21606/21659); sends wait until a probe succeeds.",
            "Fix SMS_API_URL, SMS_ACCOUNT_SID or SMS_FROM.",
        ),
        ErrorCode(
            "sms_sender_refused",
            "message_permanent: Twilio refused the portal's own SMS sender id (21212/21606/21659 with the "
            "portal's sender id as From); dead, and SMS of other portals go on.",
            "Fix or clear the portal's SMS sender id (some countries allow no alphanumeric sender), then replay.",
        ),
        ErrorCode(
            "sms_invalid_number",
            "recipient_refused: Twilio says the number cannot receive SMS "
            "(21211, 21214, 21217, 21407, 21421, 21612, 21614); `bounced`, the number suppressed.",
            "Correct the attendee's phone at the portal (an update webhook), then replay.",
        ),
        ErrorCode(
            "sms_recipient_rate_limited",
            "message_temporary: Twilio 14107, too many messages to this recipient in a short time; retried.",
            "None.",
        ),
        ErrorCode(
            "esp_auth_failed",
            "provider_misconfigured: the ESP answered 401/403 (API key wrong or "
            "revoked); sends wait (never dead) until a probe succeeds.",
            "Fix the ANYMAIL settings.",
        ),
        ErrorCode(
            "provider_misconfigured",
            "Every provider of the channel has its breaker open as "
            "misconfigured; the send waits in PostgreSQL without using attempts.",
            "Fix the provider's configuration (see the breaker's reason in /admin/status/).",
        ),
        ErrorCode(
            "send_at_once_failed",
            "The apply actor's own send of a notification it had just created "
            "raised an unexpected error; its outbox row was made due, so the notification_send actor "
            "sends it (with its retries).",
            "None if rare: nothing is lost. Read the error if it repeats.",
        ),
        ErrorCode(
            "notification_bookkeeping_failed",
            "The provider accepted the message and `sent` was "
            "recorded, but writing the attempt row or metrics failed afterwards; not re-sent.",
            "Read the traceback; the notification is sent, only its history row is missing.",
        ),
        ErrorCode(
            "outcome_unknown",
            "The whole message reached the provider and its answer never came (no reply "
            "to the final '.' within EMAIL_DATA_TIMEOUT_SECONDS; an SMS request unanswered whose provider's "
            "message listing could not be asked). It may have been delivered, so it is never re-sent by "
            "itself: the notification is dead with this code.",
            "Check the mail server's log or the SMS "
            "provider's console for the notification id; replay only if it did not arrive.",
        ),
        ErrorCode(
            "sms_rate_limited",
            "message_temporary: the SMS API answered 429 with Retry-After; the send "
            "waits that long (at most NOTIFICATION_RATE_LIMIT_MAX_WAIT_SECONDS), the breaker is not touched.",
            "None unless persistent: raise the account's rate limit with the provider.",
        ),
        ErrorCode(
            "esp_rate_limited",
            "message_temporary: the e-mail service provider answered 429 with "
            "Retry-After; the send waits that long (bounded), the breaker is not touched.",
            "None unless persistent: raise the ESP plan's rate limit.",
        ),
        ErrorCode(
            "sent_not_recorded",
            "The provider accepted the message but `sent` could not be written within "
            "the claim window (database unreachable); the row stays `sending` and is never handed back.",
            "Check PostgreSQL. If the outage outlasted NOTIFICATION_CLAIM_TIMEOUT_SECONDS the message may be "
            "sent a second time (docs/notifications.md, duplicate windows).",
        ),
        ErrorCode(
            "registration_cancelled",
            "Not sent: the registration was cancelled after this confirmation or "
            "update was created (it would arrive after the cancellation). Status `cancelled`.",
            "None. A replay is refused for the same reason.",
        ),
        ErrorCode(
            "event_started",
            "Not sent: this reminder's event has already started (or it belongs to a "
            "cancelled registration). Status `cancelled`.",
            "None. A replay is refused for the same reason.",
        ),
        # --- provider reports after `sent`: ESP tracking webhooks, SMS status callbacks (docs/delivery-status.md)
        ErrorCode(
            "invalid_provider_signature",
            "An SMS status callback without a valid X-Twilio-Signature (HMAC-SHA1 of PUBLIC_BASE_URL + path "
            "and the sorted form fields, keyed with SMS_AUTH_TOKEN); nothing was recorded.",
            "If it repeats from the provider: check SMS_AUTH_TOKEN and that PUBLIC_BASE_URL is exactly the "
            "URL the provider calls (scheme, host, port). Otherwise someone is forging callbacks.",
            403,
        ),
        ErrorCode(
            "esp_webhook_refused",
            "django-anymail refused an ESP tracking webhook at /anymail/<esp>/tracking/: wrong or missing basic "
            "auth (ANYMAIL_WEBHOOK_SECRET), a bad signature (e.g. Mailgun's signing key), or a body it cannot "
            "read; answered 400, nothing recorded.",
            "If it repeats from the ESP: check ANYMAIL_WEBHOOK_SECRET and the ESP's signing key match the "
            "webhook URL and key configured at the ESP. Otherwise someone is forging events.",
            400,
        ),
        ErrorCode(
            "esp_webhook_unauthenticated",
            "An ESP tracking event reached /anymail/<esp>/tracking/ while ANYMAIL_WEBHOOK_SECRET is unset, for an "
            "ESP whose only webhook security is that basic auth: anyone could have sent it, so it is ignored "
            "(answered 200, nothing recorded).",
            "Set ANYMAIL_WEBHOOK_SECRET and put the same user:password in the webhook URL at the ESP "
            "(docs/delivery-status.md).",
        ),
        ErrorCode(
            "provider_report_unmatched",
            "An ESP tracking event or SMS status callback names a message no notification has (sent by "
            "another system on the same account, or erased); answered 2xx/404 so the provider stops, counted.",
            "None if rare. Many: check that the ESP account or SMS number is not shared with another sender.",
        ),
        # --- after `sent` (CONTRACT section 8, docs/delivery-status.md)
        ErrorCode(
            "address_suppressed",
            "Not sent: the address or number has an active suppression (it bounced for good, its owner "
            "complained or replied STOP, or staff suppressed it). Status `suppressed`, no provider call; "
            "a replay is refused for the same reason.",
            "Read the suppression in the admin (Notifications > Suppressions: what caused it). If the "
            "address works again, lift it with a reason (permission notifications.lift_suppression), then replay.",
        ),
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
