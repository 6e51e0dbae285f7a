"""The intake and the admin's static files under a real gunicorn (CONTRACT sections 3 and 4):
chunked bodies, repeated and non-ASCII headers, bounded metric labels, a styled admin after
nothing but `migrate` (under gunicorn, and under runserver as `make run` starts it)."""

from __future__ import annotations

import http.client
import json
import re
import secrets
import sys
import tempfile
import urllib.parse
import urllib.request

import pytest

from apps.webhooks.models import Portal, WebhookEvent
from tests.support.polling import free_port, http_ok, wait_until
from tests.support.processes import ManagedProcess, process_env, start_web
from tests.support.webhooks import encode, payload, signed_headers

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

LIMIT = 4096


@pytest.fixture
def web(portal: Portal):
    # DATA_DIR in a fresh directory: no collectstatic output anywhere, only what `migrate` made (the test DB)
    env = process_env(WEBHOOK_MAX_BODY_BYTES=str(LIMIT), DATA_DIR=tempfile.mkdtemp(prefix="ep-data-"))
    process, base_url = start_web(env, workers=1)
    yield process, base_url
    process.stop()
    assert "Traceback" not in process.log_path.read_text(errors="replace")


def connect(base_url: str) -> http.client.HTTPConnection:
    parsed = urllib.parse.urlsplit(base_url)
    return http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)


def send(
    base_url: str,
    method: str,
    path: str,
    headers: list[tuple[str, str]],
    body: bytes | None = None,
    *,
    chunks: list[bytes] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request with headers exactly as given (repeats kept); `chunks` sends the body chunked."""
    conn = connect(base_url)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            conn.putheader(name, value)
        if chunks is not None:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for chunk in chunks:
                conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            conn.putheader("Content-Length", str(len(body or b"")))
            conn.endheaders(body or b"")
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def pieces(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def test_a_chunked_signed_body_is_read_like_any_other_up_to_the_limit(web) -> None:
    _, base_url = web
    body = encode(payload("R-CHUNK-1"))
    headers = list(signed_headers(body).items())
    status, _, content = send(base_url, "POST", "/webhooks/pretix/", headers, chunks=pieces(body, 7))
    assert status == 202, content
    event = WebhookEvent.objects.get(id=json.loads(content)["event_id"])
    assert bytes(event.raw_body) == body

    # exactly the limit: read in full and accepted
    data = payload("R-CHUNK-2")
    data["padding"] = ""
    data["padding"] = "x" * (LIMIT - len(encode(data)))
    body = encode(data)
    assert len(body) == LIMIT
    status, _, content = send(
        base_url, "POST", "/webhooks/pretix/", list(signed_headers(body).items()), chunks=pieces(body, 1000)
    )
    assert status == 202, content

    # one byte over: 413, nothing stored
    data["padding"] += "x"
    body = encode(data)
    status, _, content = send(
        base_url, "POST", "/webhooks/pretix/", list(signed_headers(body).items()), chunks=pieces(body, 1000)
    )
    assert status == 413 and json.loads(content)["error"]["code"] == "payload_too_large"
    assert WebhookEvent.objects.count() == 2


def test_repeated_and_non_ascii_headers_get_a_4xx_with_the_error_body(web) -> None:
    _, base_url = web
    body = encode(payload("R-HDR-1"))
    signed = signed_headers(body)
    # Given the signature header sent twice (one stale value, one good): either may match
    headers = [(k, v) for k, v in signed.items() if k != "webhook-signature"]
    headers += [("webhook-signature", "v1," + "A" * 44), ("webhook-signature", signed["webhook-signature"])]
    status, _, content = send(base_url, "POST", "/webhooks/pretix/", headers, body)
    assert status == 202, content

    cases = {
        "webhook-id twice": [*signed.items(), ("webhook-id", "other")],
        "webhook-timestamp twice": [*signed.items(), ("webhook-timestamp", signed["webhook-timestamp"])],
        "latin-1 webhook-id": [(k, "msg_\xe9\xff" if k == "webhook-id" else v) for k, v in signed.items()],
        "latin-1 signature": [(k, "v1,\xe9\xe9" if k == "webhook-signature" else v) for k, v in signed.items()],
        "latin-1 timestamp": [(k, "\xb9\xb2" if k == "webhook-timestamp" else v) for k, v in signed.items()],
        "400-digit timestamp": [(k, "9" * 400 if k == "webhook-timestamp" else v) for k, v in signed.items()],
    }
    for name, case_headers in cases.items():
        status, response_headers, content = send(base_url, "POST", "/webhooks/pretix/", case_headers, body)
        assert 400 <= status < 500, (name, status, content)
        assert response_headers["Content-Type"] == "application/json", name
        assert json.loads(content)["error"]["code"] == "invalid_signature", name


def portal_label_values(base_url: str) -> set[str]:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return set(re.findall(r'^eventplatform_webhook_requests_total\{[^}]*portal="([^"]*)"', text, re.MULTILINE))


def test_random_slugs_methods_and_paths_add_no_metric_label_values(web) -> None:
    _, base_url = web
    body = encode(payload("R-MET-1"))
    assert send(base_url, "POST", "/webhooks/pretix/", list(signed_headers(body).items()), body)[0] == 202
    before = portal_label_values(base_url)
    for _ in range(300):
        slug = secrets.token_hex(6)
        assert send(base_url, "GET", f"/webhooks/{slug}/", [])[0] == 405
    for _ in range(20):
        slug = secrets.token_hex(6)
        assert send(base_url, "POST", f"/webhooks/{slug}/", [], b"{}")[0] == 404
        assert send(base_url, "POST", f"/webhooks/{slug}/x/y", [], b"{}")[0] == 404
        assert send(base_url, "GET", "/webhooks/pretix/", [])[0] == 405
    after = portal_label_values(base_url)
    print(f"portal label values before {sorted(before)}, after 340 hostile requests {sorted(after)}")
    assert after <= {"pretix", "_unknown"}


def test_the_admin_is_styled_with_nothing_but_migrate_before_gunicorn(web) -> None:
    _, base_url = web
    with urllib.request.urlopen(f"{base_url}/static/admin/css/base.css", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/css")
        assert b"body" in response.read()
    with urllib.request.urlopen(f"{base_url}/admin/login/", timeout=10) as response:
        page = response.read().decode()
    assert "/static/admin/css/base.css" in page


def test_runserver_as_make_run_starts_it_serves_the_admin_styled(portal: Portal) -> None:
    # Given runserver as run_pipeline's embedded mode calls it (DEBUG off, no --insecure, no collectstatic)
    port = free_port()
    server = ManagedProcess(
        "runserver",
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        process_env(DEBUG="false", DATA_DIR=tempfile.mkdtemp(prefix="ep-data-")),
    )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(f"{base_url}/healthz") or not server.alive(), timeout=60, what="runserver")
        with urllib.request.urlopen(f"{base_url}/static/admin/css/base.css", timeout=10) as response:
            assert response.status == 200 and response.headers["Content-Type"].startswith("text/css")
    finally:
        server.stop()


def test_storage_down_is_503_with_the_error_body_and_bounded_labels(portal: Portal) -> None:
    # Given a gunicorn whose database cannot be reached (nothing listens on its port)
    env = process_env(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nowhere",
        DATA_DIR=tempfile.mkdtemp(prefix="ep-data-"),
    )
    process, base_url = start_web(env, workers=1)
    try:
        body = encode(payload("R-DOWN-1"))
        for _ in range(30):
            status, headers, content = send(
                base_url, "POST", f"/webhooks/{secrets.token_hex(6)}/", list(signed_headers(body).items()), body
            )
            assert status == 503 and headers["Retry-After"] == "5", content
            assert json.loads(content)["error"]["code"] == "database_unavailable"
        status, _, content = send(base_url, "POST", "/webhooks/pretix/", list(signed_headers(body).items()), body)
        assert status == 503, content
        assert portal_label_values(base_url) == {"_unknown"}
    finally:
        process.stop()
