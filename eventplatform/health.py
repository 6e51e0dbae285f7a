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
    from eventplatform.broker import connect_blocking

    try:  # ready while any node of the cluster answers: every process fails over to it
        connect_blocking(settings.BROKER_URLS, timeout=CHECK_TIMEOUT_SECONDS).close()
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


