"""Errors to Sentry when SENTRY_DSN is set; nothing at all when it is not.

Nothing secret or personal leaves with an event: no frame locals (a portal's list of `whsec_`
secrets sits in the intake's locals), no request bodies (attendees' e-mail and phone), no default
PII, and a last scrubber masks signing secrets and e-mail addresses wherever they still appear
(an exception message, a breadcrumb).
"""

from __future__ import annotations

import re
from typing import Any

from eventplatform.settings.base import env

SENTRY_DSN = env.str("SENTRY_DSN", default="")

_SECRET = re.compile(r"whsec_[A-Za-z0-9+/=_-]*")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _EMAIL.sub("[email]", _SECRET.sub("[Filtered]", value))
    if isinstance(value, dict):
        return {key: _scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item) for item in value]
    return value


def sentry_before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    """Every event and transaction passes here last, whatever an integration put in it."""
    return _scrub(event)


if SENTRY_DSN:
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.dramatiq import DramatiqIntegration

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        integrations=[DjangoIntegration(), DramatiqIntegration()],
        environment=env.str("SENTRY_ENVIRONMENT", default="production"),
        traces_sample_rate=env.float("SENTRY_TRACES_SAMPLE_RATE", default=0.0),
        send_default_pii=False,  # attendees' e-mail addresses and phone numbers stay out of Sentry
        include_local_variables=False,
        max_request_body_size="never",
        before_send=sentry_before_send,
        before_send_transaction=sentry_before_send,
    )
