"""POST /webhooks/<portal_slug>/ (CONTRACT section 4).

A plain Django view rather than a DRF APIView: this is the hottest path in the system and its
input is raw bytes that must be signature-checked before anything parses them. Schema validation
is a DRF serializer.
"""

from __future__ import annotations

from typing import Any

import structlog
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from apps.webhooks import signature
from apps.webhooks.parsing import MalformedJson, metric_type_label, parse_delivery
from apps.webhooks.selectors import portal_with_secrets
from apps.webhooks.services import RecordedEvent, portal_rate_limit_hit, webhook_event_record
from eventplatform import metrics
from eventplatform.errors import EventPlatformError, describe

log = structlog.get_logger("webhooks")


def error_response(code: str, message: str, details: Any = None, **headers: str) -> JsonResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    response = JsonResponse(body, status=describe(code).http_status)
    for name, value in headers.items():
        response[name] = value
    response.outcome = code  # type: ignore[attr-defined]
    return response


def _read_body(request: HttpRequest, limit: int) -> bytes | None:
    """The body, or None when it exceeds the limit; a declared length is checked before reading."""
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        return None
    body = request.read(limit + 1)
    return None if len(body) > limit else body


def _stored_response(recorded: RecordedEvent) -> JsonResponse:
    if recorded.status == "rejected":
        return error_response(
            "invalid_payload", "The delivery is signed but does not follow the schema; it is kept as rejected.",
            details={"event_id": str(recorded.event_id), "duplicate": recorded.duplicate, "fields": recorded.errors},
        )
    response = JsonResponse(
        {"event_id": str(recorded.event_id), "duplicate": recorded.duplicate}, status=200 if recorded.duplicate else 202
    )
    response.outcome = "duplicate" if recorded.duplicate else "accepted"  # type: ignore[attr-defined]
    return response


@csrf_exempt
def webhook_receive(request: HttpRequest, portal_slug: str) -> JsonResponse:
    with metrics.WEBHOOK_LATENCY.time():
        try:
            response = _handle(request, portal_slug)
        except (OperationalError, InterfaceError):
            # Nothing was committed: a 503 makes the portal deliver again later (Standard Webhooks retries).
            connection.close()
            response = error_response("database_unavailable", "Storage is unavailable; please retry.",
                                      **{"Retry-After": "5"})
    outcome = getattr(response, "outcome", "accepted")
    if response.status_code >= 400:
        log.warning("webhook.rejected", error_code=outcome, portal=portal_slug, status=response.status_code,
                    delivery_id=request.headers.get("webhook-id"))
    event_type = getattr(response, "event_type", "")
    # Unknown slugs come from anyone: one label for all of them keeps the series bounded.
    portal_label = "_unknown" if outcome == "unknown_portal" else portal_slug[:64]
    metrics.WEBHOOK_REQUESTS.labels(portal=portal_label, type=event_type, outcome=outcome).inc()
    return response


def _handle(request: HttpRequest, portal_slug: str) -> JsonResponse:
    if request.method != "POST":
        return error_response("method_not_allowed", "Use POST.", Allow="POST")
    found = portal_with_secrets(slug=portal_slug)
    if found is None:
        return error_response("unknown_portal", f"No active portal '{portal_slug}'.")
    portal, secrets = found
    body = _read_body(request, settings.WEBHOOK_MAX_BODY_BYTES)
    if body is None:
        return error_response("payload_too_large", f"Body exceeds {settings.WEBHOOK_MAX_BODY_BYTES} bytes.")
    try:
        delivery_id, _ = signature.verify(
            headers=request.headers, body=body, secrets=secrets, tolerance_seconds=settings.WEBHOOK_TOLERANCE_SECONDS
        )
    except EventPlatformError as error:
        return error_response(error.code, error.message)
    if len(delivery_id) > 255:
        return error_response("invalid_signature", "webhook-id is longer than 255 characters.")
    retry_after = portal_rate_limit_hit(portal=portal)
    if retry_after is not None:
        return error_response("rate_limited", "Too many requests for this portal.", **{"Retry-After": str(retry_after)})
    structlog.contextvars.bind_contextvars(portal=portal.slug, delivery_id=delivery_id)
    try:
        parsed = parse_delivery(body)
    except MalformedJson as error:
        return error_response(error.code, error.message)
    recorded = webhook_event_record(
        portal=portal, delivery_id=delivery_id, event_type=parsed.event_type, raw_body=body, payload=parsed.payload,
        errors=parsed.errors,
    )
    structlog.contextvars.bind_contextvars(event_id=str(recorded.event_id), correlation_id=str(recorded.event_id))
    log.info("webhook.duplicate" if recorded.duplicate else "webhook.stored", type=parsed.event_type,
             status=recorded.status)
    response = _stored_response(recorded)
    response.event_type = metric_type_label(parsed.event_type)  # type: ignore[attr-defined]
    return response
