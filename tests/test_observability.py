"""Health endpoints, metrics and logs, with the real processes and services."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import requests
from django.test import Client

from eventplatform import health
from tests.support.polling import free_port
from tests.support.processes import process_env, start_relay, start_web, start_worker, wait_until
from tests.support.prometheus import metric, scrape
from tests.support.smtp import SmtpServer
from tests.support.webhooks import encode, payload, signed_headers


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, timeout=120, capture_output=True)


@pytest.mark.slow
@pytest.mark.django_db
def test_readyz_is_503_naming_the_broker_while_rabbitmq_is_stopped(client: Client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    rabbitmqctl("stop_app")
    try:
        health._broker_check_cache = None  # the 200 above is reused for 2 s per process
        started = time.monotonic()
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["failing"] == ["broker"]
        assert time.monotonic() - started < 10, "the check must time out quickly"
        assert client.get("/healthz").status_code == 200, "liveness does not depend on the broker"
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")
    wait_until(lambda: client.get("/readyz").status_code == 200, timeout=30, what="/readyz back to 200")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_metrics_and_logs_follow_a_real_run(portal, smtp_server: SmtpServer) -> None:
    # Given the real processes, one webhook that will be delivered and one whose e-mail is refused for good
    worker_port, relay_port = free_port(), free_port()
    env = process_env(
        EMAIL_URL=smtp_server.url, dramatiq_prom_port=str(worker_port), RELAY_METRICS_PORT=str(relay_port)
    )
    web, base_url = start_web(env)
    relay, worker = start_relay(env), start_worker(env)
    try:
        good, bad = (
            encode(payload("R-OBS-1", email="ok@example.org", phone=None)),
            encode(payload("R-OBS-2", email="nobody@example.org", phone=None)),
        )
        smtp_server.handler.scripted_replies.append("550 5.1.1 no such user")
        responses = [
            requests.post(f"{base_url}/webhooks/pretix/", data=b, headers=signed_headers(b), timeout=10)
            for b in (bad, good)
        ]
        assert [r.status_code for r in responses] == [202, 202]
        event_ids = [r.json()["event_id"] for r in responses]
        bad_signature = signed_headers(good)
        bad_signature["webhook-signature"] = "v1,bm9wZQ=="
        assert (
            requests.post(f"{base_url}/webhooks/pretix/", data=good, headers=bad_signature, timeout=10).status_code
            == 401
        )
        wait_until(lambda: smtp_server.messages, timeout=45, what="the e-mail")

        # Then the web process counted the outcomes
        web_samples = scrape(f"{base_url}/metrics")
        assert (
            metric(
                web_samples,
                "eventplatform_webhook_requests_total",
                portal="pretix",
                outcome="accepted",
                type="registration.created",
            )
            == 2
        )
        assert metric(web_samples, "eventplatform_webhook_requests_total", outcome="invalid_signature") == 1
        assert metric(web_samples, "eventplatform_webhook_request_seconds_count") == 3

        # And the workers' exporter shows one sent, one dead letter, Dramatiq's own counters too
        def worker_counts() -> dict[str, float] | None:
            samples = scrape(f"http://127.0.0.1:{worker_port}/")
            sent = metric(samples, "eventplatform_notifications_total", status="sent")
            dead = metric(samples, "eventplatform_dead_letters_total", error_code="smtp_message_rejected")
            return samples if (sent, dead) == (1, 1) else None

        samples = wait_until(worker_counts, timeout=30, what="worker metrics")
        assert (
            metric(
                samples,
                "eventplatform_notification_attempts_total",
                outcome="permanent_error",
                error_code="smtp_message_rejected",
            )
            == 1
        )
        # (the two applies: each sent its notification itself, apps/notifications/send_at_once.py)
        assert metric(samples, "dramatiq_messages_total") >= 2

        # And the relay exports outbox and queue metrics
        relay_samples = wait_until(lambda: scrape(f"http://127.0.0.1:{relay_port}/"), timeout=10)
        assert metric(relay_samples, "eventplatform_outbox_published_total") >= 2
        assert metric(relay_samples, "eventplatform_rabbitmq_up") == 1
        assert 'eventplatform_rabbitmq_queue_messages{queue="notifications"}' in relay_samples

        # And one search for a webhook's event id finds a JSON line in each process's log
        for process in (web, relay, worker):
            lines = [json.loads(line) for line in process.output().splitlines() if line.startswith("{")]
            assert lines, f"{process.name} wrote no JSON lines"
            for event_id in event_ids:
                assert any(
                    event_id == line.get("correlation_id") or event_id in line.get("correlation_ids", [])
                    for line in lines
                ), f"{process.name} has no line for {event_id}"
            assert all("nobody@example.org" not in json.dumps(line) for line in lines), "unmasked e-mail"
            warnings = [line for line in lines if line.get("level") in ("warning", "error")]
            assert all("error_code" in line for line in warnings), warnings
    finally:
        for process in (web, relay, worker):
            process.stop()
