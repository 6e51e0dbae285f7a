"""The whole pipeline with real processes: gunicorn, run_relay, rundramatiq, an aiosmtpd server,
this run's PostgreSQL test database and RabbitMQ vhost."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator

import pytest
import requests

from apps.notifications.models import Notification
from apps.webhooks.models import WebhookEvent
from tests.support.processes import process_env, start_relay, start_web, start_worker, wait_until
from tests.support.smtp import SmtpServer
from tests.support.webhooks import encode, payload, signed_headers

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


class Stack:
    def __init__(self, smtp: SmtpServer) -> None:
        env = process_env(EMAIL_URL=smtp.url, RELAY_METRICS_PORT="0")
        self.web, self.base_url = start_web(env)
        self.relay = start_relay(env)
        self.worker = start_worker(env)
        self.processes = [self.web, self.relay, self.worker]

    def post(self, body: bytes, headers: dict[str, str], portal: str = "pretix") -> requests.Response:
        return requests.post(f"{self.base_url}/webhooks/{portal}/", data=body, headers=headers, timeout=10)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.output()[-4000:]}" for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
def stack(portal, smtp_server: SmtpServer) -> Iterator[Stack]:
    stack = Stack(smtp_server)
    yield stack
    stack.stop()


def test_signed_webhook_becomes_exactly_one_email(stack: Stack, smtp_server: SmtpServer) -> None:
    body = encode(payload("R-E2E-1", email="grace@example.org", phone=None))
    response = stack.post(body, signed_headers(body))
    assert response.status_code == 202, response.text

    try:
        wait_until(lambda: smtp_server.messages, timeout=45, what="the confirmation e-mail")
    except TimeoutError:
        raise AssertionError(stack.logs()) from None
    time.sleep(2)  # a duplicate would arrive within this window
    messages = smtp_server.messages
    assert len(messages) == 1
    message = messages[0]
    assert message["To"] == "grace@example.org"
    notification = Notification.objects.get(registration__external_id="R-E2E-1", kind="confirmation")
    assert message["X-Eventplatform-Notification-Id"] == str(notification.id)
    assert (notification.status, notification.attempts) == ("sent", 1)
    assert "PyData Berlin" in message["Subject"]


def test_bad_signature_yields_no_email(stack: Stack, smtp_server: SmtpServer) -> None:
    body = encode(payload("R-E2E-2", phone=None))
    headers = signed_headers(body)
    headers["webhook-signature"] = "v1,bm9wZQ=="
    assert stack.post(body, headers).status_code == 401
    # A correctly signed one afterwards proves the pipeline was running all along.
    good = encode(payload("R-E2E-3", email="ok@example.org", phone=None))
    assert stack.post(good, signed_headers(good)).status_code == 202
    wait_until(lambda: smtp_server.messages, timeout=45, what="the control e-mail")
    time.sleep(1)
    assert [m["To"] for m in smtp_server.messages] == ["ok@example.org"]
    assert WebhookEvent.objects.count() == 1


def test_twenty_identical_deliveries_at_once_make_one_event_and_one_email(
    stack: Stack, smtp_server: SmtpServer
) -> None:
    body = encode(payload("R-E2E-RACE", email="race@example.org", phone=None))
    headers = signed_headers(body, delivery_id="msg_race")
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: stack.post(body, headers), range(20)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(202) == 1 and statuses.count(200) == 19, statuses
    assert len({r.json()["event_id"] for r in responses}) == 1
    wait_until(lambda: smtp_server.messages, timeout=45, what="the e-mail")
    time.sleep(3)
    assert len(smtp_server.messages) == 1
    assert WebhookEvent.objects.count() == 1
