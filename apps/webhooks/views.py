"""POST /webhooks/<portal_slug>/ (CONTRACT section 4).

A plain Django view rather than a DRF APIView: this is the hottest path in the system and its
input is raw bytes that must be signature-checked before anything parses them. Schema validation
is a DRF serializer.

No input gets a 5xx: every header, body and size the contract's table does not name is answered
with a 4xx and the error body (docs/webhooks.md, "Hostile input"); only storage being down is a
503. Metric labels take values from bounded sets only (a known portal's slug, a catalogue code).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import yaml
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from apps.webhooks import signature
from apps.webhooks.parsing import MalformedJson, metric_type_label, parse_delivery
from apps.webhooks.selectors import portal_with_secrets
from apps.webhooks.services import RecordedEvent, portal_rate_limit_hit, webhook_event_record
from eventplatform import metrics
from eventplatform.database import storage_unavailable
from eventplatform.errors import EventPlatformError, describe

log = structlog.get_logger("webhooks")

UNKNOWN_PORTAL_LABEL = "_unknown"
SLUG = re.compile(r"[-a-zA-Z0-9_]{1,64}")


@dataclass(frozen=True)
class Answer:
    """What the intake decided: the response, its outcome code, and the bounded metric labels."""

    response: JsonResponse
    outcome: str
    portal_label: str = UNKNOWN_PORTAL_LABEL
    event_type: str = ""


def error_response(code: str, message: str, details: Any = None, **headers: str) -> JsonResponse:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    response = JsonResponse(body, status=describe(code).http_status)
    for name, value in headers.items():
        response[name] = value
    return response


def _error(code: str, message: str, *, portal_label: str = UNKNOWN_PORTAL_LABEL, **headers: str) -> Answer:
    return Answer(error_response(code, message, **headers), code, portal_label)


class BodyTooLarge(Exception):
    pass


class LengthRequired(Exception):
    pass


def _read_body(request: HttpRequest, limit: int) -> bytes:
    """The body, at most `limit` bytes; raises BodyTooLarge past it.

    A declared Content-Length is checked before reading. Without one (`Transfer-Encoding:
    chunked`) Django's request stream reads nothing, so the server's own input is read instead,
    when the server says reading it to the end is safe (`wsgi.input_terminated`: gunicorn does,
    having decoded the chunks); a server that cannot (runserver) gets 411 rather than a body
    silently taken as empty.
    """
    declared = request.META.get("CONTENT_LENGTH")
    chunked = "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower()
    if chunked and not declared:
        if not request.META.get("wsgi.input_terminated"):
            raise LengthRequired
        body = request.META["wsgi.input"].read(limit + 1)
    else:
        try:
            if int(declared or 0) > limit:
                raise BodyTooLarge
        except ValueError:
            pass  # the server refuses a malformed Content-Length before we see it; read what there is
        body = request.read(limit + 1)
    if len(body) > limit:
        raise BodyTooLarge
    return body


def _stored_answer(recorded: RecordedEvent, *, portal_label: str, event_type: str) -> Answer:
    if recorded.status == "rejected":
        response = error_response(
            "invalid_payload",
            "The delivery is signed but does not follow the schema; it is kept as rejected.",
            details={"event_id": str(recorded.event_id), "duplicate": recorded.duplicate, "fields": recorded.errors},
        )
        return Answer(response, "invalid_payload", portal_label, event_type)
    response = JsonResponse(
        {"event_id": str(recorded.event_id), "duplicate": recorded.duplicate}, status=200 if recorded.duplicate else 202
    )
    return Answer(response, "duplicate" if recorded.duplicate else "accepted", portal_label, event_type)


@csrf_exempt
def webhook_receive(request: HttpRequest, portal_slug: str) -> JsonResponse:
    with metrics.WEBHOOK_LATENCY.time():
        try:
            answer = _handle(request, portal_slug)
        except DatabaseError as error:
            # Down, read-only (a failover, a full disk), out of connections: nothing was committed, and
            # a 503 makes the portal deliver again later (Standard Webhooks retries). Any other
            # database error is a bug of ours and stays a 500.
            if not storage_unavailable(error):
                raise
            connection.close()
            answer = _error("database_unavailable", "Storage is unavailable; please retry.", **{"Retry-After": "5"})
    response = answer.response
    if response.status_code >= 400:
        # Both values come from the sender: bounded here so a log line stays a line.
        log.warning(
            "webhook.rejected",
            error_code=answer.outcome,
            portal=portal_slug[:64],
            status=response.status_code,
            delivery_id=request.headers.get("webhook-id", "")[:255] or None,
        )
        response._has_been_logged = True  # logged once, here: django.request would log it again (as library_warning)
    metrics.WEBHOOK_REQUESTS.labels(portal=answer.portal_label, type=answer.event_type, outcome=answer.outcome).inc()
    return response


def _handle(request: HttpRequest, portal_slug: str) -> Answer:
    if request.method != "POST":
        return _error("method_not_allowed", "Use POST.", Allow="POST")
    found = portal_with_secrets(slug=portal_slug) if SLUG.fullmatch(portal_slug) else None
    if found is None:
        return _error("unknown_portal", f"No active portal '{portal_slug[:64]}'.")
    portal, secrets = found
    label = portal.slug  # a portal that exists: bounded by what staff create
    # Before the body is read and before any HMAC: an unsigned flood costs one counter update per
    # request, not a signature check per active secret. The price: a flood also uses up the
    # portal's own allowance for the minute (its deliveries get 429 and are retried later).
    retry_after = portal_rate_limit_hit(portal=portal)
    if retry_after is not None:
        return _error(
            "rate_limited",
            "Too many requests for this portal.",
            portal_label=label,
            **{"Retry-After": str(retry_after)},
        )
    try:
        body = _read_body(request, settings.WEBHOOK_MAX_BODY_BYTES)
    except BodyTooLarge:
        return _error("payload_too_large", f"Body exceeds {settings.WEBHOOK_MAX_BODY_BYTES} bytes.", portal_label=label)
    except LengthRequired:
        return _error(
            "length_required", "This server cannot read a chunked body; send Content-Length.", portal_label=label
        )
    try:
        delivery_id, _ = signature.verify(
            headers=request.headers, body=body, secrets=secrets, tolerance_seconds=settings.WEBHOOK_TOLERANCE_SECONDS
        )
    except EventPlatformError as error:
        return _error(error.code, error.message, portal_label=label)
    structlog.contextvars.bind_contextvars(portal=portal.slug, delivery_id=delivery_id)
    try:
        parsed = parse_delivery(body)
    except MalformedJson as error:
        return _error(error.code, error.message, portal_label=label)
    recorded = webhook_event_record(
        portal=portal,
        delivery_id=delivery_id,
        event_type=parsed.event_type,
        raw_body=body,
        payload=parsed.payload,
        errors=parsed.errors,
    )
    structlog.contextvars.bind_contextvars(event_id=str(recorded.event_id), correlation_id=str(recorded.event_id))
    log.info(
        "webhook.duplicate" if recorded.duplicate else "webhook.stored", type=parsed.event_type, status=recorded.status
    )
    return _stored_answer(recorded, portal_label=label, event_type=metric_type_label(parsed.event_type))


@csrf_exempt
def webhook_not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Any other path under /webhooks/: the contract's error body, one metric label."""
    metrics.WEBHOOK_REQUESTS.labels(portal=UNKNOWN_PORTAL_LABEL, type="", outcome="unknown_portal").inc()
    return error_response("unknown_portal", "No webhook endpoint here; POST /webhooks/<portal_slug>/.")


_SCHEMA_PATH = Path(__file__).with_name("openapi.yaml")


@functools.cache
def _schema_text() -> tuple[bytes, bytes]:
    text = _SCHEMA_PATH.read_bytes()
    return text, json.dumps(yaml.safe_load(text), indent=2).encode()


@require_safe
def api_schema(request: HttpRequest) -> HttpResponse:
    """GET /api/schema/: the webhook API's OpenAPI 3 schema (apps/webhooks/openapi.yaml), YAML by
    default as drf-spectacular serves it, JSON with `?format=json`. Hand-written: it describes the
    raw signed body and its headers, which a generator reading DRF views cannot see."""
    yaml_text, json_text = _schema_text()
    if request.GET.get("format") == "json":
        return HttpResponse(json_text, content_type="application/vnd.oai.openapi+json")
    return HttpResponse(yaml_text, content_type="application/vnd.oai.openapi; charset=utf-8")
