"""Prometheus metrics shared by all processes (names documented in docs/metrics.md).

With PROMETHEUS_MULTIPROC_DIR set (gunicorn with several workers, the Dramatiq process pool),
prometheus_client writes samples to per-process files that /metrics aggregates; a metric update
is a write to an mmap'd file, never a network call, so the request path never blocks on it.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

WEBHOOK_REQUESTS = Counter(
    "eventplatform_webhook_requests_total",
    "Webhook requests by portal, event type and outcome code.",
    ["portal", "type", "outcome"],
)
WEBHOOK_LATENCY = Histogram(
    "eventplatform_webhook_request_seconds", "Webhook request handling time.", buckets=LATENCY_BUCKETS
)

OUTBOX_PUBLISHED = Counter("eventplatform_outbox_published_total", "Outbox rows confirmed by RabbitMQ.")
OUTBOX_REJECTED = Counter(
    "eventplatform_outbox_rejected_total", "Outbox rows RabbitMQ returned or nacked (backed off, retried later)."
)
OUTBOX_PUBLISH_FAILURES = Counter("eventplatform_outbox_publish_failures_total", "Failed publish batches.")
OUTBOX_PENDING = Gauge(
    "eventplatform_outbox_pending", "Unpublished outbox rows that are due.", multiprocess_mode="livemax"
)
OUTBOX_LAG = Gauge(
    "eventplatform_outbox_lag_seconds", "Age of the oldest due unpublished outbox row.", multiprocess_mode="livemax"
)
OUTBOX_BATCH_SIZE = Histogram(
    "eventplatform_outbox_batch_size", "Rows per published batch.", buckets=(1, 5, 10, 50, 100, 250, 500, 1000)
)
OUTBOX_PUBLISH_LATENCY = Histogram(
    "eventplatform_outbox_publish_seconds", "Time to publish and confirm a batch.", buckets=LATENCY_BUCKETS
)
OUTBOX_COMMIT_TO_PUBLISH = Histogram(
    "eventplatform_outbox_commit_to_publish_seconds",
    "Outbox row created_at to broker confirm.",
    buckets=LATENCY_BUCKETS,
)

NOTIFICATIONS = Counter(
    "eventplatform_notifications_total", "Notifications reaching a final status.", ["kind", "channel", "status"]
)
NOTIFICATION_ATTEMPTS = Counter(
    "eventplatform_notification_attempts_total",
    "Send attempts by outcome.",
    ["channel", "provider", "outcome", "error_code"],
)
NOTIFICATION_SEND_SECONDS = Histogram(
    "eventplatform_notification_send_seconds", "Provider call duration.", ["channel"], buckets=LATENCY_BUCKETS
)
NOTIFICATION_END_TO_END_SECONDS = Histogram(
    "eventplatform_notification_end_to_end_seconds",
    "Webhook received to notification accepted by the provider.",
    ["kind", "channel"],
    buckets=LATENCY_BUCKETS,
)
NOTIFICATION_RETRIES = Counter("eventplatform_notification_retries_total", "Transient failures retried.", ["channel"])
DEAD_LETTERS = Counter(
    "eventplatform_dead_letters_total", "Notifications marked dead.", ["kind", "channel", "error_code"]
)
BREAKER_STATE = Gauge(
    "eventplatform_circuit_breaker_open",
    "1 when the provider's circuit breaker is open.",
    ["provider"],
    multiprocess_mode="livemax",
)
REGISTRATION_EVENTS = Counter(
    "eventplatform_registration_events_applied_total", "Webhook events applied.", ["type", "outcome"]
)
NOTIFICATION_DEFERRALS = Counter(
    "eventplatform_notification_deferrals_total",
    "Sends deferred because every provider of the channel had its breaker open.",
    ["channel"],
)
NOTIFICATION_ROUNDS = Counter(
    "eventplatform_notification_retry_rounds_total",
    "Retry rounds scheduled through the outbox after Dramatiq's retries ran out.",
    ["channel"],
)

# --- failed applies, the sweeper and the scheduler (docs/failures.md)
FAILED_APPLIES = Counter(
    "eventplatform_failed_applies_total",
    "Webhook event applies recorded as failed (the dead letter of webhook events).",
    ["error_code"],
)
WEBHOOK_EVENTS_RESCUED = Counter(
    "eventplatform_webhook_events_rescued_total",
    "Accepted webhook events the sweeper re-enqueued because they were still unapplied.",
)
SCHEDULER_LAST_RUN = Gauge(
    "eventplatform_scheduler_last_run_timestamp_seconds",
    "Unix time a scheduler job last succeeded (or another scheduler held its lock).",
    ["task"],
    multiprocess_mode="max",
)
SCHEDULER_JOB_FAILURES = Counter(
    "eventplatform_scheduler_job_failures_total",
    "Periodic scheduler jobs that raised (error code scheduler_job_failed).",
    ["task"],
)
# --- failure classification, deferral and rescue (docs/notifications.md)
BREAKER_MISCONFIGURED = Gauge(
    "eventplatform_circuit_breaker_misconfigured",
    "1 while the provider's breaker is open because it is misconfigured (wrong "
    "credentials, relay denied): an operator must act.",
    ["provider"],
    multiprocess_mode="livemax",
)
NOTIFICATIONS_RESCUED = Counter(
    "eventplatform_notifications_rescued_total",
    "Notifications re-queued by the scheduler's sweep (notifications_rescue_stalled).",
    ["reason"],
)
NOTIFICATIONS_WOKEN = Counter(
    "eventplatform_notifications_woken_total",
    "Deferred sends queued again when their channel's breaker let sends through.",
    ["channel"],
)
NOTIFICATION_REPORTS = Counter(
    "eventplatform_notification_reports_total",
    "Delivery reports received after `sent` (DSN, abuse report, ESP event, SMS callback, refusal at hand-over).",
    ["channel", "source", "outcome"],
)
SUPPRESSIONS_ADDED = Counter(
    "eventplatform_suppressions_added_total",
    "Addresses and numbers newly suppressed, by channel and reason.",
    ["channel", "reason"],
)
BOUNCE_MESSAGES = Counter(
    "eventplatform_bounce_messages_total",
    "Messages and recipients the bounce receiver handled, by outcome: dsn, arf, bounce_text (recorded), "
    "unknown_notification, auto_reply, no_token, no_report, not_a_report, not_a_complaint, unparseable, "
    "recipient_refused, forged_token, database_unavailable, error.",
    ["outcome"],
)

PROVIDER_REPORTS = Counter(
    "eventplatform_provider_reports_total",
    "ESP tracking events and SMS status callbacks received, by source, what they said and what became of them.",
    ["source", "event", "result"],
)
