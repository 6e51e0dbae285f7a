"""A local HTTP server standing in for Twilio's Messages API (and, on any other path, for an ESP's API).

`scripted_statuses` fail the next requests with a status (body code 20000 + status);
`scripted_replies` with a status and a JSON body of its own (Twilio's `{"code": 21211}`, Postmark's
`{"ErrorCode": 406}`) and, optionally, headers (`Retry-After`); `fail_all_with` fails every request; a
wrong account or token on the Twilio path gets 401 with Twilio's code 20003, as the real API answers.
`answer_delay` answers an accepted message that many seconds late (it is recorded at once, as a
provider that has it). GET on the Messages path lists what was accepted, as Twilio's API does
(`?To=...&DateSent>=...`, newest first); `listing_status` makes the listing fail with that status.

Status callbacks, as Twilio makes them: a message accepted with a `StatusCallback` URL gets, from a
thread of the stand-in, a signed POST `sent` and then `delivered`, or `undelivered` with the ErrorCode
`undeliverable[To]` (30005: unknown number); `calls_back = False` turns that off. `status_callback()`
sends one by hand (a replay, an out-of-order report, a bad signature); `callback_answers` records what
our server answered (0: it could not be reached).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
import uuid
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from tests.support.polling import free_port


def twilio_signature(auth_token: str, url: str, form: dict[str, str]) -> str:
    """X-Twilio-Signature as Twilio computes it (twilio.com/docs/usage/security): base64 of the
    HMAC-SHA1, keyed with the auth token, of the URL followed by each form field's name and value,
    sorted by name. Written here from Twilio's description, apart from the view's own code, so a test
    signing with it checks the view against Twilio's rule rather than against itself."""
    data = url + "".join(name + form[name] for name in sorted(form))
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()).decode()


class SmsApi:
    def __init__(self, account_sid: str = "AC_test", auth_token: str = "token") -> None:
        self.account_sid, self.auth_token = account_sid, auth_token
        self.received: list[dict[str, str]] = []
        self.scripted_statuses: deque[int] = deque()
        self.scripted_replies: deque[tuple[int, dict] | tuple[int, dict, dict[str, str]]] = deque()
        self.answer_delay = 0.0
        self.listing_status: int | None = None
        self.listings = 0
        self.sids: list[str] = []
        self.paths: list[str] = []
        self.fail_all_with: int | None = None
        self.calls = 0
        self.undeliverable: dict[str, int] = {}
        self.calls_back = True
        self.callback_answers: list[tuple[str, str, int]] = []  # (MessageSid, MessageStatus, HTTP status)
        self._callback_threads: list[threading.Thread] = []
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

            def _answer(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
                with api.lock:
                    api.listings += 1
                    listed = [
                        {"sid": sid, "to": form["To"], "from": form["From"], "body": form["Body"], "status": "sent"}
                        for sid, form in zip(api.sids, api.received, strict=True)
                        if "To" in form and form["To"] == query.get("To")
                    ]
                if api.listing_status:
                    self._answer(api.listing_status, {"code": 20500, "message": "listing failed"})
                else:
                    self._answer(200, {"messages": listed[::-1]})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                expected_path = f"/2010-04-01/Accounts/{api.account_sid}/Messages.json"
                expected_auth = "Basic " + base64.b64encode(f"{api.account_sid}:{api.auth_token}".encode()).decode()
                twilio = self.path.startswith("/2010-04-01/")
                with api.lock:
                    api.calls += 1
                    api.paths.append(self.path)
                    body_override, headers = None, None
                    if api.fail_all_with:
                        status = api.fail_all_with
                    elif api.scripted_replies:
                        status, body_override, *extra = api.scripted_replies.popleft()
                        headers = extra[0] if extra else None
                    else:
                        status = api.scripted_statuses.popleft() if api.scripted_statuses else 201
                    if twilio and (self.path != expected_path or self.headers.get("Authorization") != expected_auth):
                        status, body_override = 401, {"code": 20003, "message": "Authenticate", "status": 401}
                    form = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
                    sid = "SM" + uuid.uuid4().hex
                    if status in (200, 201):
                        api.received.append(form if twilio else {"path": self.path, "body": body})
                        api.sids.append(sid)
                    delay = api.answer_delay if status in (200, 201) else 0.0
                if body_override is not None:
                    payload = body_override
                elif status in (200, 201):
                    payload = {"sid": sid, "status": "queued"}
                else:
                    payload = {"code": 20000 + status, "message": "scripted failure", "status": status}
                if delay:
                    time.sleep(delay)
                try:
                    self._answer(status, payload, headers)
                except OSError:
                    pass  # the client gave up waiting
                if api.calls_back and twilio and status in (200, 201) and form.get("StatusCallback"):
                    api._report_later(sid, form)

        return Handler

    def _report_later(self, sid: str, form: dict[str, str]) -> None:
        """What the carrier says after the API answered: `sent`, then the final status."""

        def report() -> None:
            error_code = self.undeliverable.get(form["To"])
            final = "delivered" if error_code is None else "undelivered"
            for status, code in (("sent", None), (final, error_code)):
                try:
                    self.status_callback(sid, status, form=form, error_code=code)
                except requests.RequestException:
                    with self.lock:
                        self.callback_answers.append((sid, status, 0))

        thread = threading.Thread(target=report, name="sms-status-callbacks", daemon=True)
        with self.lock:
            self._callback_threads.append(thread)
        thread.start()

    def status_callback(
        self,
        sid: str,
        status: str,
        *,
        form: dict[str, str],
        error_code: int | None = None,
        url: str | None = None,
        signature: str | None = None,
    ) -> requests.Response:
        """POST one status callback for message `sid` (sent with `form`) to its StatusCallback URL (or
        `url`), signed with the auth token unless `signature` is given, as Twilio's form fields."""
        target = url or form["StatusCallback"]
        fields = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "From": form["From"],
            "To": form["To"],
            "MessageSid": sid,
            "SmsSid": sid,
            "MessageStatus": status,
            "SmsStatus": status,
        }
        if error_code is not None:
            fields["ErrorCode"] = str(error_code)
        headers = {"X-Twilio-Signature": signature or twilio_signature(self.auth_token, target, fields)}
        response = requests.post(target, data=fields, headers=headers, timeout=10)
        with self.lock:
            self.callback_answers.append((sid, status, response.status_code))
        return response

    def wait_for_callbacks(self, timeout: float = 30) -> None:
        """Until every automatic status callback so far was answered."""
        with self.lock:
            threads = list(self._callback_threads)
        for thread in threads:
            thread.join(timeout)

    def start(self) -> SmsApi:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
