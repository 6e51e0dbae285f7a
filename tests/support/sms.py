"""A local HTTP server standing in for Twilio's Messages API."""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.support.polling import free_port


class SmsApi:
    def __init__(self, account_sid: str = "AC_test", auth_token: str = "token") -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.received: list[dict[str, str]] = []
        self.scripted_statuses: deque[int] = deque()
        self.fail_all_with: int | None = None
        self.calls = 0
        self.lock = threading.Lock()
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                expected_path = f"/2010-04-01/Accounts/{api.account_sid}/Messages.json"
                expected_auth = "Basic " + base64.b64encode(f"{api.account_sid}:{api.auth_token}".encode()).decode()
                with api.lock:
                    api.calls += 1
                    status = api.fail_all_with or (api.scripted_statuses.popleft() if api.scripted_statuses else 201)
                    if self.path != expected_path or self.headers.get("Authorization") != expected_auth:
                        status = 401
                    form = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
                    if status == 201:
                        api.received.append(form)
                payload = {"sid": "SM" + uuid.uuid4().hex, "status": "queued"} if status == 201 else {
                    "code": 20000 + status, "message": "scripted failure", "status": status}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def start(self) -> SmsApi:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
