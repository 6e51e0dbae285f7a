"""A local HTTP server standing in for Twilio's Messages API (and, on any other path, for an ESP's API).

`scripted_statuses` fail the next requests with a status (body code 20000 + status);
`scripted_replies` with a status and a JSON body of its own (Twilio's `{"code": 21211}`, Postmark's
`{"ErrorCode": 406}`); `fail_all_with` fails every request; a wrong account or token on the Twilio
path gets 401 with Twilio's code 20003, as the real API answers.
"""

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
        self.scripted_replies: deque[tuple[int, dict]] = deque()
        self.paths: list[str] = []
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

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                expected_path = f"/2010-04-01/Accounts/{api.account_sid}/Messages.json"
                expected_auth = "Basic " + base64.b64encode(f"{api.account_sid}:{api.auth_token}".encode()).decode()
                twilio = self.path.startswith("/2010-04-01/")
                with api.lock:
                    api.calls += 1
                    api.paths.append(self.path)
                    body_override = None
                    if api.fail_all_with:
                        status = api.fail_all_with
                    elif api.scripted_replies:
                        status, body_override = api.scripted_replies.popleft()
                    else:
                        status = api.scripted_statuses.popleft() if api.scripted_statuses else 201
                    if twilio and (self.path != expected_path or self.headers.get("Authorization") != expected_auth):
                        status, body_override = 401, {"code": 20003, "message": "Authenticate", "status": 401}
                    form = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
                    if status in (200, 201):
                        api.received.append(form if twilio else {"path": self.path, "body": body})
                if body_override is not None:
                    payload = body_override
                elif status in (200, 201):
                    payload = {"sid": "SM" + uuid.uuid4().hex, "status": "queued"}
                else:
                    payload = {"code": 20000 + status, "message": "scripted failure", "status": status}
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
