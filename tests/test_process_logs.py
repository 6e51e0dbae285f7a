"""CONTRACT section 3: with LOG_FORMAT=json every line a process writes is one JSON object,
its libraries' lines included (gunicorn's, django_dramatiq's, Dramatiq's start-up and shutdown
lines from its main, worker and fork processes, pika's)."""

from __future__ import annotations

import json

import pytest
import requests

from tests.support.polling import free_port
from tests.support.processes import ManagedProcess, process_env, start_relay, start_web, start_worker, wait_until
from tests.support.smtp import SmtpServer
from tests.support.webhooks import encode, payload, signed_headers

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def non_json_lines(process: ManagedProcess) -> list[str]:
    bad = []
    for line in process.output().splitlines():
        if not line.strip():
            continue
        try:
            if not isinstance(json.loads(line), dict):
                bad.append(line)
        except ValueError:
            bad.append(line)
    return bad


def test_every_line_of_web_relay_and_worker_is_json(portal, smtp_server: SmtpServer) -> None:
    env = process_env(
        EMAIL_URL=smtp_server.url,
        LOG_LEVEL="INFO",
        RELAY_METRICS_PORT=str(free_port()),
        dramatiq_prom_port=str(free_port()),
    )
    web, base_url = start_web(env)
    relay = start_relay(env)
    worker = start_worker(env, processes=2, threads=2)
    processes = [web, relay, worker]
    try:
        body = encode(payload("R-LOGS-1", phone=None))
        assert (
            requests.post(
                f"{base_url}/webhooks/pretix/", data=body, headers=signed_headers(body), timeout=10
            ).status_code
            == 202
        )
        wait_until(lambda: smtp_server.messages, timeout=60, what="the confirmation e-mail")
        wait_until(
            lambda: worker.output().count("Worker process is ready for action") == 2,
            timeout=30,
            what="both worker processes' start-up lines",
        )
    finally:
        for process in processes:
            process.stop()  # the shutdown lines count too
    for process in processes:
        assert non_json_lines(process) == [], f"{process.name} wrote non-JSON lines:\n{process.output()[-3000:]}"
    worker_log = worker.output()
    # The lines that used to be plain text are there, as JSON.
    for expected in (
        "Discovered tasks module",
        "is booting up",
        "Worker process is ready for action",
        "Fork process",
        "Worker has been shut down",
    ):
        assert expected in worker_log, expected
    assert "Booting worker" in web.output() and "relay.started" in relay.output()
