"""Settings shared by every environment, read from the environment in one place (CONTRACT section 2).

With no DATABASE_URL / BROKER_URL the project runs on an embedded default: a SQLite file and
Dramatiq's in-process StubBroker, so `make run` works on a machine with nothing installed.
Nothing starts on these defaults by accident: `manage.py` and `eventplatform.wsgi` choose
`eventplatform.settings.production` (which refuses them) unless DJANGO_SETTINGS_MODULE names
`eventplatform.settings.development` or `.test`.
"""

from __future__ import annotations

import datetime as dt
import warnings
from email.utils import parseaddr
from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env.str("SECRET_KEY", default="dev-only-insecure-key-change-me")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "axes",  # admin login throttling (AXES_* below)
    "rest_framework",
    "apps.webhooks",
    "apps.outbox",
    "apps.registrations",
    "apps.notifications",
    "apps.privacy",
    "apps.support",  # the top layer: composes the others (docs/architecture.md)
    # After our apps: Django takes a management command from the first app that has it, and
    # apps.outbox's `rundramatiq` (JSON log lines) replaces django_dramatiq's. The broker is still
    # set up before any actor is declared (django_dramatiq does it when its AppConfig is created).
    "django_dramatiq",
]

MIDDLEWARE = [
    "eventplatform.logging.RequestContextMiddleware",
    # Every 4xx outside the admin with the contract's JSON error body (eventplatform/http_errors.py).
    "eventplatform.http_errors.JsonErrorMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Static files from the web process itself (CONTRACT section 3): under gunicorn and runserver alike.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it answers a locked-out login with 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "apps.support.urls"
WSGI_APPLICATION = "eventplatform.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "eventplatform" / "templates"],  # the status page, the admin index link
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATA_DIR = Path(env.str("DATA_DIR", default=str(BASE_DIR / "var")))
EMBEDDED_DATABASE = "DATABASE_URL" not in env
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'eventplatform.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    # Web, relay and worker share one SQLite file in embedded mode: wait for the write lock
    # instead of failing, and let readers proceed while a writer commits.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    # Off by default: the check is a `SELECT 1` round trip on every request. After a database
    # restart the first request of a process fails instead (503, connection dropped), and
    # portals deliver again.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = env.bool("CONN_HEALTH_CHECKS", default=False)
    # Parameters travel beside the SQL (psycopg's server-side binding) instead of being quoted into
    # it in Python: quoting a notification's JSON context was a tenth of a worker's CPU.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("server_side_binding", True)
    # A statement run this many times on a connection is prepared by psycopg, so PostgreSQL parses
    # and plans it once (Django turns this off by default for connection poolers). `off` for a
    # pooler in transaction mode that cannot keep prepared statements (PgBouncer before 1.21).
    _prepare = env.str("DB_PREPARE_THRESHOLD", default="5")
    DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", None if _prepare == "off" else int(_prepare))

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# The admin's messages live in its session. The default (cookie, then session) builds a signer on
# every request, webhooks included: 8% of the intake's CPU for requests that never show a message.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

# Django's four standard validators: staff accounts can replay notifications and read attendees' data.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- admin login throttling (django-axes): after AXES_FAILURE_LIMIT failed logins for one username
# from one address, that pair gets 429 for AXES_COOLOFF_MINUTES (then it may try again; a success
# resets the count). Per username AND address: a guesser cannot lock staff out from elsewhere.
# Failures are kept in the database (shared by every web worker); staff with the permission see
# and delete them in the admin ("Axes"). Its own log lines would carry the username: off.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # failures are what matter; no row per successful login
AXES_VERBOSE = False
AXES_CLIENT_IP_CALLABLE = "eventplatform.auth.client_ip"

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
# --- static files (WhiteNoise): the admin is styled with nothing but `migrate` before the web
# process: files are found where the apps keep them (the finders, read once at start), so no
# collectstatic is needed; after a collectstatic, STATIC_ROOT is served too.
WHITENOISE_USE_FINDERS = True
WHITENOISE_MAX_AGE = 3600  # no hashed names (no manifest storage), so no "forever" caching
# STATIC_ROOT exists only after a collectstatic; its absence is the normal case here, not a warning.
warnings.filterwarnings("ignore", message="No directory at: ")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
}

# --- webhooks (CONTRACT section 4)
WEBHOOK_TOLERANCE_SECONDS = env.int("WEBHOOK_TOLERANCE_SECONDS", default=300)
WEBHOOK_MAX_BODY_BYTES = env.int("WEBHOOK_MAX_BODY_BYTES", default=262144)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(WEBHOOK_MAX_BODY_BYTES, 2621440)
# Portal signing secrets are stored encrypted with these Fernet keys (eventplatform/encryption.py):
# comma-separated, the first encrypts, all decrypt (key rotation). This default is public, for
# development only: production settings refuse it, as they refuse a missing SECRET_KEY.
DEVELOPMENT_WEBHOOK_SECRETS_KEY = "d_nJworJHybl0N5IaZxrQFF3AUh1761mnfxkY_OAKMo="
WEBHOOK_SECRETS_KEY = env.str("WEBHOOK_SECRETS_KEY", default="").strip() or DEVELOPMENT_WEBHOOK_SECRETS_KEY

# --- e-mail (EMAIL_URL: smtp://, smtp+tls://, consolemail://, or an anymail backend via EMAIL_BACKEND)
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
# Connect, greeting and each command's reply; the reply to the end of DATA gets the longer
# EMAIL_DATA_TIMEOUT_SECONDS (RFC 5321 section 4.5.3.2.6: 10 minutes), since the server may already
# have the message: a timeout there is `outcome_unknown`, never retried (docs/notifications.md).
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
EMAIL_DATA_TIMEOUT_SECONDS = env.float("EMAIL_DATA_TIMEOUT_SECONDS", default=600.0)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Eventplatform <no-reply@eventplatform.local>")
# The domains a portal's own From may use (those our SPF and DKIM cover; apps/webhooks/senders.py),
# matched exactly: list each subdomain. Unset or empty (as `.env.example` has it): the domain of DEFAULT_FROM_EMAIL.
EMAIL_SENDER_DOMAINS = [
    domain.strip() for domain in env.list("EMAIL_SENDER_DOMAINS", default=[]) if domain.strip()
] or [parseaddr(DEFAULT_FROM_EMAIL)[1].rpartition("@")[2].lower()]
# The return path (CONTRACT section 8): with it set, each e-mail's envelope sender is
# local+TOKEN@domain (apps/notifications/channels/email/return_path.py) and `run_bounce_receiver`
# takes the reports sent to it, on BOUNCE_RECEIVER_BIND. BOUNCE_MAX_BYTES: larger mail gets 552.
# BOUNCE_METRICS_PORT: its Prometheus exporter (0 disables it), 9193 as issue 19 set; the scheduler moved to 9194.
EMAIL_BOUNCE_ADDRESS = env.str("EMAIL_BOUNCE_ADDRESS", default="")
BOUNCE_RECEIVER_BIND = env.str("BOUNCE_RECEIVER_BIND", default="127.0.0.1:2526")
BOUNCE_MAX_BYTES = env.int("BOUNCE_MAX_BYTES", default=10 * 1024 * 1024)
BOUNCE_METRICS_PORT = env.int("BOUNCE_METRICS_PORT", default=9193)

# --- SMS (Twilio Messages API compatible)
SMS_API_URL = env.str("SMS_API_URL", default="")
SMS_ACCOUNT_SID = env.str("SMS_ACCOUNT_SID", default="")
SMS_AUTH_TOKEN = env.str("SMS_AUTH_TOKEN", default="")
SMS_FROM = env.str("SMS_FROM", default="")
SMS_TIMEOUT_SECONDS = env.float("SMS_TIMEOUT_SECONDS", default=10.0)
# The embedded default prints SMS to the console, as it does e-mail (apps/notifications/channels/sms/console.py),
# so `send_test_webhook --phone` shows one; with a database of its own SMS needs SMS_API_URL.
SMS_CONSOLE = env.bool("SMS_CONSOLE", default=EMBEDDED_DATABASE and not SMS_API_URL)
# The public https base URL providers call back (CONTRACT section 2): with it, every SMS asks for
# status callbacks at <PUBLIC_BASE_URL>/sms/status/<notification id>/, and their signatures are checked
# against that URL, never one built from the request's Host (docs/delivery-status.md).
PUBLIC_BASE_URL = env.str("PUBLIC_BASE_URL", default="").rstrip("/")
# The notification channels, each a module exposing CHANNEL (apps/notifications/channels/__init__.py):
# a channel is one package and one entry here. SMS takes part only when SMS_API_URL or SMS_CONSOLE is set.
NOTIFICATION_CHANNELS = env.list(
    "NOTIFICATION_CHANNELS", default=["apps.notifications.channels.email", "apps.notifications.channels.sms"]
)

# --- notifications
# How long an event's calendar entry lasts (its DTEND, and the "add to calendar" link's end): webhooks
# carry no end time (apps/notifications/channels/email/calendar.py).
CALENDAR_EVENT_MINUTES = env.int("CALENDAR_EVENT_MINUTES", default=60)
# A `sending` claim older than this is taken to belong to a dead worker and may be claimed again, so
# it must outlast the longest provider call (apps/notifications/checks.py refuses to start otherwise).
NOTIFICATION_CLAIM_TIMEOUT_SECONDS = env.int("NOTIFICATION_CLAIM_TIMEOUT_SECONDS", default=900)
# Django system checks to silence: the fault tests run a 5 s claim on purpose (tests/support/stack.py),
# which notifications.E001 refuses anywhere else.
SILENCED_SYSTEM_CHECKS = env.list("SILENCED_SYSTEM_CHECKS", default=[])
# RabbitMQ's consumer_timeout (rabbitmq.conf; 30 minutes by default): the claim must stay below it.
BROKER_CONSUMER_TIMEOUT_SECONDS = env.int("BROKER_CONSUMER_TIMEOUT_SECONDS", default=1800)
# A provider's 429 Retry-After is honoured up to this long (longer asks wait this long, then try).
NOTIFICATION_RATE_LIMIT_MAX_WAIT_SECONDS = env.float("NOTIFICATION_RATE_LIMIT_MAX_WAIT_SECONDS", default=300.0)
# Dramatiq holds a delayed message unacked until it is due; RabbitMQ closes a channel holding one
# longer than its consumer_timeout (30 min by default; dramatiq issue 827), so backoffs stay short.
NOTIFICATION_MAX_RETRIES = env.int("NOTIFICATION_MAX_RETRIES", default=8)
NOTIFICATION_MIN_BACKOFF_MS = env.int("NOTIFICATION_MIN_BACKOFF_MS", default=2000)
NOTIFICATION_MAX_BACKOFF_MS = env.int("NOTIFICATION_MAX_BACKOFF_MS", default=300_000)
APPLY_MAX_RETRIES = env.int("APPLY_MAX_RETRIES", default=20)
APPLY_MIN_BACKOFF_MS = env.int("APPLY_MIN_BACKOFF_MS", default=1000)
APPLY_MAX_BACKOFF_MS = env.int("APPLY_MAX_BACKOFF_MS", default=300_000)

# --- failed applies, the sweeper and the scheduler (docs/failures.md)
# An accepted event with no registration event this long after its apply message was published is
# re-enqueued through the outbox by the sweeper (unless it is a recorded failed apply).
APPLY_SWEEP_AFTER_SECONDS = env.int("APPLY_SWEEP_AFTER_SECONDS", default=600)
APPLY_SWEEP_BATCH_SIZE = env.int("APPLY_SWEEP_BATCH_SIZE", default=500)
# `send_reminders --every`: its Prometheus exporter (0 disables it), and the interval run_pipeline uses.
SCHEDULER_METRICS_PORT = env.int("SCHEDULER_METRICS_PORT", default=9194)
SCHEDULER_INTERVAL_SECONDS = env.int("SCHEDULER_INTERVAL_SECONDS", default=5)
# When Dramatiq's retries run out on a transient error, a new round is scheduled through the outbox
# (a durable delay in PostgreSQL) until the notification is older than the horizon (docs/notifications.md).
NOTIFICATION_RETRY_HORIZON_SECONDS = env.int("NOTIFICATION_RETRY_HORIZON_SECONDS", default=86_400)
NOTIFICATION_ROUND_DELAY_SECONDS = env.int("NOTIFICATION_ROUND_DELAY_SECONDS", default=1_800)
# Wording edited in the admin: each process keeps the active versions in memory and asks the database
# whether any was saved (one small count) at most this often, so an edit reaches every worker within it.
MESSAGE_TEMPLATES_CHECK_SECONDS = env.float("MESSAGE_TEMPLATES_CHECK_SECONDS", default=5.0)
NOTIFICATION_BREAKER_THRESHOLD = env.int("NOTIFICATION_BREAKER_THRESHOLD", default=5)
NOTIFICATION_BREAKER_COOLDOWN_SECONDS = env.float("NOTIFICATION_BREAKER_COOLDOWN_SECONDS", default=30.0)
NOTIFICATION_BREAKER_PROBE_TIMEOUT_SECONDS = env.float("NOTIFICATION_BREAKER_PROBE_TIMEOUT_SECONDS", default=60.0)
# A breaker opened as misconfigured (wrong password, revoked key) is probed this often until a probe
# succeeds; sends wait meanwhile (never dead). docs/notifications.md.
NOTIFICATION_BREAKER_MISCONFIGURED_PROBE_SECONDS = env.float(
    "NOTIFICATION_BREAKER_MISCONFIGURED_PROBE_SECONDS", default=60.0
)
# The apply actor sends the notifications it created right after its COMMIT; their outbox rows
# become due this long after, should the worker die first (apps/notifications/send_at_once.py).
# Off: every send goes through the relay to the notification_send actor (workers that apply never
# call a provider).
NOTIFICATION_SEND_AT_ONCE = env.bool("NOTIFICATION_SEND_AT_ONCE", default=True)
NOTIFICATION_SEND_AT_ONCE_GRACE_SECONDS = env.int("NOTIFICATION_SEND_AT_ONCE_GRACE_SECONDS", default=10)
# The scheduler re-queues a `pending` notification whose message was published this long ago and
# never consumed (lost); a slow one costs one extra message, which the claim makes a no-op.
NOTIFICATION_PENDING_RESCUE_AFTER_SECONDS = env.int("NOTIFICATION_PENDING_RESCUE_AFTER_SECONDS", default=900)
# Used while the primary e-mail provider's breaker is open: an SMTP URL, or an anymail backend.
EMAIL_FALLBACK_URL = env.str("EMAIL_FALLBACK_URL", default="")
EMAIL_FALLBACK_BACKEND = env.str("EMAIL_FALLBACK_BACKEND", default="")
if "EMAIL_BACKEND" in env:  # an ESP through django-anymail wins over EMAIL_URL's scheme
    EMAIL_BACKEND = env.str("EMAIL_BACKEND")
ANYMAIL = env.json("ANYMAIL", default={})
# ESP tracking webhooks at /anymail/<esp>/tracking/ (docs/delivery-status.md, "ESP tracking webhooks"):
# the HTTP basic auth "user:password" the ESP's webhook URL carries (anymail's WEBHOOK_SECRET, for
# every ESP), and Mailgun's HTTP webhook signing key (each event is HMAC-signed with it). Set here or
# in ANYMAIL; ANYMAIL wins.
_anymail_webhook_settings = {
    "WEBHOOK_SECRET": env.str("ANYMAIL_WEBHOOK_SECRET", default=""),
    "MAILGUN_WEBHOOK_SIGNING_KEY": env.str("ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY", default=""),
}
ANYMAIL = {**{name: value for name, value in _anymail_webhook_settings.items() if value}, **ANYMAIL}
REMINDER_24H_BEFORE_SECONDS = env.int("REMINDER_24H_BEFORE_SECONDS", default=86_400)
REMINDER_1H_BEFORE_SECONDS = env.int("REMINDER_1H_BEFORE_SECONDS", default=3_600)

# --- relay
RELAY_BATCH_SIZE = env.int("RELAY_BATCH_SIZE", default=500)
RELAY_POLL_SECONDS = env.float("RELAY_POLL_SECONDS", default=2.0)
# After a NOTIFY, wait this long before claiming rows, so a burst goes out as one batch.
# 20 ms: at 100 webhooks/s, batches of two or three instead of one (the relay's CPU per row
# halves); the wait is a small part of a webhook's way to the SMTP server.
RELAY_COALESCE_SECONDS = env.float("RELAY_COALESCE_SECONDS", default=0.02)
RELAY_METRICS_PORT = env.int("RELAY_METRICS_PORT", default=9192)

# --- data retention (apps/privacy/retention.py; `apply_retention`, run daily). 0 keeps forever.
# Processed-message ids guard against a redelivered message being applied twice: keep them longer
# than any message can wait (RabbitMQ's dead-letter queue keeps messages 7 days).
RETENTION_OUTBOX_PUBLISHED_DAYS = env.int("RETENTION_OUTBOX_PUBLISHED_DAYS", default=7)
RETENTION_PROCESSED_MESSAGES_DAYS = env.int("RETENTION_PROCESSED_MESSAGES_DAYS", default=30)
RETENTION_RATE_WINDOWS_DAYS = env.int("RETENTION_RATE_WINDOWS_DAYS", default=1)
# Raw bodies and payloads of applied webhook events (the registration's event log keeps what it needs).
RETENTION_EVENT_BODIES_DAYS = env.int("RETENTION_EVENT_BODIES_DAYS", default=90)
RETENTION_BATCH_SIZE = env.int("RETENTION_BATCH_SIZE", default=2000)

# --- HTTPS (docs/deploy.md). BEHIND_TLS_PROXY: TLS ends at a proxy whose X-Forwarded-Proto is
# trusted. HTTPS-only (redirect plain HTTP, Secure-only cookies, HSTS) is what production settings
# use unless ALLOW_PLAIN_HTTP=true, and what the proxy switch turns on anywhere. Exempt from the
# redirect: the probes and /metrics (a kubelet or Prometheus speaks HTTP to the process itself), and
# the webhooks: a redirect cannot protect a POST whose body was already sent, it would only lose
# the delivery (clients do not re-POST a 301), so an internal caller on plain HTTP still gets through.
BEHIND_TLS_PROXY = env.bool("BEHIND_TLS_PROXY", default=False)
if BEHIND_TLS_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")


def https_only_settings() -> dict[str, object]:
    return {
        "SECURE_SSL_REDIRECT": True,
        # Providers' callbacks too (anymail's ESP webhooks, SMS status callbacks): a POST, same reason.
        "SECURE_REDIRECT_EXEMPT": [
            r"^healthz$",
            r"^readyz$",
            r"^metrics$",
            r"^webhooks/",
            r"^anymail/",
            r"^sms/status/",
        ],
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": env.int("SECURE_HSTS_SECONDS", default=31_536_000),
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True),
        "SECURE_HSTS_PRELOAD": env.bool("SECURE_HSTS_PRELOAD", default=True),
    }


if BEHIND_TLS_PROXY:
    vars().update(https_only_settings())

# --- status page (/admin/status/): a scheduler job not run for this long is shown as stale
STATUS_SCHEDULER_STALE_SECONDS = env.int("STATUS_SCHEDULER_STALE_SECONDS", default=900)

from eventplatform.settings.dramatiq import *  # noqa: E402, F403
from eventplatform.settings.logging import *  # noqa: E402, F403
from eventplatform.settings.sentry import *  # noqa: E402, F403
