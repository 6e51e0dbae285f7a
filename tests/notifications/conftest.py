"""Fixtures for notification tests: real SMTP/SMS stand-ins wired into settings, registrations,
and an in-process pipeline (outbox relay thread + Dramatiq worker) on this run's RabbitMQ vhost."""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import dramatiq
import pytest
from django.db import connection, transaction

import apps.notifications.tasks  # noqa: F401 - registers the actors with the broker, as rundramatiq does
from apps.notifications.channels import reset_providers
from apps.notifications.models import Notification
from apps.notifications.services import notification_create
from apps.outbox.management.commands.run_relay import build_publisher
from apps.outbox.relay import outbox_publish_batch
from apps.registrations.models import Registration
from eventplatform.logging import build_formatter
from tests.registrations.factories import RegistrationFactory
from tests.support.sms import SmsApi
from tests.support.smtp import SmtpServer


@pytest.fixture
def email_via_smtp(settings, smtp_server: SmtpServer) -> SmtpServer:
    """Notifications go to the test's aiosmtpd server."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_server.port
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_TIMEOUT = 5
    reset_providers()
    return smtp_server


@pytest.fixture
def sms_via_api(settings, sms_api: SmsApi) -> SmsApi:
    settings.SMS_API_URL, settings.SMS_ACCOUNT_SID, settings.SMS_AUTH_TOKEN = sms_api.url, "AC_test", "token"
    settings.SMS_FROM, settings.SMS_TIMEOUT_SECONDS = "+4930123456", 5
    reset_providers()
    return sms_api


@pytest.fixture
def fast_retries(settings) -> Any:
    """Tiny backoffs, rounds and cool-downs: the whole policy runs in seconds."""
    settings.NOTIFICATION_MIN_BACKOFF_MS = 50
    settings.NOTIFICATION_MAX_BACKOFF_MS = 200
    settings.NOTIFICATION_MAX_RETRIES = 5
    settings.NOTIFICATION_ROUND_DELAY_SECONDS = 1
    settings.NOTIFICATION_BREAKER_THRESHOLD = 3
    settings.NOTIFICATION_BREAKER_COOLDOWN_SECONDS = 1.0
    return settings


def context_for(registration: Registration, **overrides: Any) -> dict[str, Any]:
    context = {
        "status": "active",
        "email": registration.email,
        "phone": registration.phone,
        "first_name": registration.first_name,
        "last_name": registration.last_name,
        "role": registration.role,
        "locale": registration.locale,
        "event_external_id": "EV-7",
        "event_name": registration.event_name,
        "event_starts_at": registration.event_starts_at.isoformat() if registration.event_starts_at else "",
        "event_timezone": registration.event_timezone,
        "event_venue": registration.event_venue,
    }
    context.update(overrides)
    return context


@pytest.fixture
def make_registration(portal) -> Callable[..., Registration]:
    counter = iter(range(1, 1_000_000))

    def make(**fields: Any) -> Registration:
        values = {
            "external_id": f"R-{next(counter)}",
            "email": "ada@example.org",
            "phone": "+4915112345678",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "event_name": "PyData Berlin",
            "event_starts_at": "2030-12-03T08:00:00Z",
            "event_timezone": "Europe/Berlin",
            "event_venue": "bcc",
        }
        values.update(fields)
        registration = RegistrationFactory(portal=portal, **values)
        registration.refresh_from_db()
        return registration

    return make


@pytest.fixture
def make_notification(make_registration: Callable[..., Registration]) -> Callable[..., Notification]:
    """A notification created as the pipeline creates them: with its outbox row, in one transaction."""

    def make(
        kind: str = "confirmation",
        channel: str = "email",
        registration: Registration | None = None,
        **context_overrides: Any,
    ) -> Notification:
        registration = registration or make_registration()
        with transaction.atomic():
            notification = notification_create(
                registration=registration,
                kind=kind,
                channel=channel,
                context=context_for(registration, **context_overrides),
            )
        assert notification is not None
        return notification

    return make


class InProcessPipeline:
    """The outbox relay (a thread publishing due rows with the real publisher) and a Dramatiq worker,
    both against this run's RabbitMQ vhost: messages take the production path, minus processes."""

    def __init__(self, worker_threads: int = 2) -> None:
        self.broker = dramatiq.get_broker()
        # This thread's broker connection may have sat idle past RabbitMQ's heartbeat timeout since an
        # earlier test used it (pika answers heartbeats only when called): start from a fresh one.
        del self.broker.connection
        self.broker.declare_queue("notifications", ensure=True)  # and its .DQ / .XQ companions
        self.broker.flush_all()  # nothing left over from an earlier test
        self._stop = threading.Event()
        self._relay = threading.Thread(target=self._relay_loop, name="test-relay", daemon=True)
        self.worker = dramatiq.Worker(
            self.broker, worker_threads=worker_threads, queues={"notifications"}, worker_timeout=100
        )  # polls often: delayed retries come back on time

    def _relay_loop(self) -> None:
        publisher = build_publisher()
        try:
            while not self._stop.is_set():
                if outbox_publish_batch(publisher=publisher, batch_size=200) == 0:
                    self._stop.wait(0.05)
        finally:
            publisher.close()
            connection.close()

    def start(self) -> InProcessPipeline:
        self._relay.start()
        self.worker.start()
        return self

    def stop(self) -> None:
        self.worker.stop(timeout=10_000)
        self._stop.set()
        self._relay.join(timeout=10)
        self.broker.flush_all()


@pytest.fixture
def pipeline(fast_retries) -> Iterator[InProcessPipeline]:
    running = InProcessPipeline().start()
    yield running
    running.stop()


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The JSON lines as the processes write them (eventplatform.logging's formatter), at INFO."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(build_formatter("json"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
