"""Twilio's Messages API (or anything speaking it, at SMS_API_URL): the SMS channel's real provider.

A request that got no answer is not simply retried: the provider's message listing is asked
whether it took the message (`_find_sent`), so an SMS that arrived is not sent twice.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import requests

from apps.notifications import classification
from apps.notifications.channels.sms.callbacks import status_callback_url
from apps.notifications.channels.sms.classification import RULES
from apps.notifications.providers import OutgoingMessage, retry_after_seconds


class TwilioSmsProvider:
    """Twilio's Messages API (or anything speaking it, at SMS_API_URL)."""

    channel = "sms"

    def __init__(
        self, name: str = "sms", *, base_url: str, account_sid: str, auth_token: str, sender: str, timeout: float = 10.0
    ) -> None:
        self.name = name
        self.url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        self.auth = (account_sid, auth_token)
        self.sender = sender
        self.timeout = timeout
        self._local = threading.local()  # requests.Session is not thread-safe: one per worker thread

    def _session(self) -> requests.Session:
        if getattr(self._local, "session", None) is None:
            self._local.session = requests.Session()
        return self._local.session

    def send(self, message: OutgoingMessage) -> str:
        form = {"To": message.recipient, "From": self.sender, "Body": message.text}
        callback = status_callback_url(message.notification_id)
        if callback:  # the carrier's answer comes back to it (callbacks.py)
            form["StatusCallback"] = callback
        asked_at = dt.datetime.now(dt.UTC)
        try:
            response = self._session().post(self.url, data=form, auth=self.auth, timeout=self.timeout)
        except requests.ConnectTimeout as error:  # nothing was sent
            raise classification.network_error(RULES, "sms", "timeout", error) from error
        except requests.ReadTimeout as error:  # sent, and the answer never came: ask before any resend
            return self._find_sent(form, asked_at, error)
        except requests.RequestException as error:
            raise classification.network_error(RULES, "sms", "unreachable", error) from error
        body = _json(response)
        if response.status_code >= 400:
            twilio_code = body.get("code")
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            details = {str(twilio_code)} if twilio_code is not None else set()
            rule = classification.classify(
                RULES,
                protocol="sms",
                stage="http",
                code=response.status_code,
                details=details | ({"retry_after"} if retry_after is not None else set()),
            )
            raise classification.provider_error(
                rule,
                f"SMS API answered {response.status_code} (code {twilio_code}): {response.text[:200]}",
                retry_after=retry_after,
                remote_status=str(twilio_code if twilio_code is not None else response.status_code),
                diagnostic=f"{response.status_code} {body.get('message') or response.text[:200]}",
            )
        return str(body.get("sid", ""))

    def _find_sent(self, form: dict[str, str], asked_at: dt.datetime, timeout: Exception) -> str:
        """Our request went out and no answer came: did the provider take it? Twilio lists messages
        by recipient and day (GET Messages.json?To=...&DateSent>=...). Ours (same To, From and Body)
        is there: sent, with its sid. Not there: the provider did not take it, so a retry is safe
        (unless it lists late: docs/notifications.md). The listing cannot be asked: outcome unknown."""
        params = {"To": form["To"], "DateSent>": asked_at.date().isoformat()}
        try:
            response = self._session().get(self.url, params=params, auth=self.auth, timeout=self.timeout)
            response.raise_for_status()
            listed = _json(response).get("messages")
            if not isinstance(listed, list):
                raise ValueError("no `messages` list in the answer")
        except (requests.RequestException, ValueError) as error:
            # Named by type and status only: requests' message quotes the URL, whose query holds the number.
            status = getattr(getattr(error, "response", None), "status_code", None)
            rule = classification.classify(RULES, protocol="sms", stage="sent")
            raise classification.provider_error(
                rule,
                f"SMS request unanswered ({type(timeout).__name__}) and the message listing failed "
                f"({type(error).__name__}{f' {status}' if status else ''})",
            ) from error
        for item in listed:
            if isinstance(item, dict) and all(
                item.get(field.lower()) == form[field] for field in ("To", "From", "Body")
            ):
                return str(item.get("sid", ""))
        raise classification.network_error(RULES, "sms", "timeout", timeout)


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
