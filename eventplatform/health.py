"""/healthz (the process answers) and /readyz (database and broker reachable, short timeouts)."""

from __future__ import annotations

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventplatform.observability import metrics_registry

CHECK_TIMEOUT_SECONDS = 2.0


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"SET LOCAL statement_timeout = {int(CHECK_TIMEOUT_SECONDS * 1000)}")
            cursor.execute("SELECT 1")
        return None
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        connection.close()
        return type(error).__name__


def _check_broker() -> str | None:
    """An AMQP protocol handshake with a short timeout: the port being open is not enough."""
    if settings.EMBEDDED_BROKER:
        return None
    import pika

    parameters = pika.URLParameters(settings.BROKER_URL)
    parameters.socket_timeout = CHECK_TIMEOUT_SECONDS
    parameters.blocked_connection_timeout = CHECK_TIMEOUT_SECONDS
    parameters.stack_timeout = CHECK_TIMEOUT_SECONDS
    parameters.connection_attempts = 1
    try:
        pika.BlockingConnection(parameters).close()
        return None
    except (OSError, Exception) as error:  # noqa: BLE001 - any failure means not ready
        return type(error).__name__


def readyz(request: HttpRequest) -> JsonResponse:
    failures = {name: reason for name, reason in (("database", _check_database()), ("broker", _check_broker()))
                if reason}
    if failures:
        return JsonResponse({"status": "unavailable", "failing": sorted(failures), "details": failures}, status=503)
    return JsonResponse({"status": "ok"})


def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)


