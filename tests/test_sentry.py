"""Sentry is initialised with the Django and Dramatiq integrations only when SENTRY_DSN is set, and
what it sends carries no signing secret and no attendee data (issue 10 part 1)."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.processes import ROOT, production_env

PROBE = (
    "import django, sentry_sdk; django.setup(); client = sentry_sdk.get_client(); "
    "print(client.is_active(), sorted(getattr(client, 'integrations', {})))"
)


def probe(**env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "SENTRY_DSN"}
    environment.update(DJANGO_SETTINGS_MODULE="eventplatform.settings.development", **env)
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=environment, capture_output=True, text=True, check=True, timeout=60
    ).stdout


def test_sentry_is_off_without_a_dsn() -> None:
    assert probe().startswith("False")


def test_sentry_is_on_with_django_and_dramatiq_integrations_when_a_dsn_is_set() -> None:
    out = probe(SENTRY_DSN="http://public@127.0.0.1:9/1")
    assert out.startswith("True") and "'django'" in out and "'dramatiq'" in out


SECRET = "whsec_" + "c2VjcmV0LWtleS1ieXRlcy1mb3Itc2VudHJ5LXRlc3Q="
# A failing request through the production web entry point: the view holds the portal's secrets in
# its locals and puts one into the exception message; the body carries an attendee.
FAILING_REQUEST = f"""
import sys, types
import eventplatform.wsgi  # production settings, Sentry initialised from SENTRY_DSN
import sentry_sdk
from django.test import Client, override_settings
from django.urls import path

def check(secret, body):
    raise RuntimeError(f"no signature matches {{secret}} for a body of {{len(body)}} bytes")

def failing_view(request, portal_slug):
    secrets = ["{SECRET}"]
    for secret in secrets:
        check(secret, request.body)

urls = types.ModuleType("sentry_probe_urls")
urls.urlpatterns = [path("webhooks/<slug:portal_slug>/", failing_view)]
sys.modules["sentry_probe_urls"] = urls
with override_settings(ROOT_URLCONF="sentry_probe_urls"):
    response = Client(raise_request_exception=False).post(
        "/webhooks/pretix/", data='{{"secret": "{SECRET}", "attendee": {{"email": "ada@example.org"}}}}',
        content_type="application/json")
print(response.status_code)
sentry_sdk.flush(timeout=10)
"""


class EnvelopeSink(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:  # http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def sentry_endpoint():
    EnvelopeSink.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), EnvelopeSink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://public@127.0.0.1:{server.server_address[1]}/1", EnvelopeSink.received
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.django_db
def test_a_sentry_event_from_a_failing_request_carries_no_secret_no_locals_and_no_attendee(sentry_endpoint) -> None:
    dsn, received = sentry_endpoint
    result = subprocess.run(
        [sys.executable, "-c", FAILING_REQUEST],
        cwd=ROOT,
        env=production_env(SENTRY_DSN=dsn),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "500"
    sent = b"\n".join(received).decode()
    # The event did reach the endpoint, with the exception and its stack frames ...
    assert '"type":"event"' in sent.replace(" ", "") and "RuntimeError" in sent and "failing_view" in sent
    # ... and nothing secret or personal with it: no frame locals, no request body, no secret in the message.
    assert "whsec_" not in sent
    assert "c2VjcmV0LWtleS1ieXRlcy1mb3Itc2VudHJ5LXRlc3Q" not in sent
    assert "ada@example.org" not in sent
    assert '"vars"' not in sent
