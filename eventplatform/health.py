"""/healthz (the process answers) and /readyz (database and broker reachable, short timeouts)."""

from __future__ import annotations

import threading
import time

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventplatform.observability import metrics_registry

CHECK_TIMEOUT_SECONDS = 2.0
# How long one process reuses its last broker check: probes every second from several load
# balancers must not each open (and close) an AMQP connection, which costs RabbitMQ far more than
# a query costs PostgreSQL and shows up as connection churn.
BROKER_CHECK_CACHE_SECONDS = 2.0

_broker_check_lock = threading.Lock()
_broker_check_cache: tuple[float, str | None] | None = None  # (monotonic time checked, failure reason)


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> str | None:
    """Reads a real table within CHECK_TIMEOUT_SECONDS. `SET LOCAL` only lasts until the end of
    the transaction it runs in, so both statements run in one: outside a transaction (autocommit)
    the timeout was gone before the query ran. A table, not `SELECT 1`: a database whose tables
    are locked (a migration holding ACCESS EXCLUSIVE) cannot serve requests either."""
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"SET LOCAL statement_timeout = {int(CHECK_TIMEOUT_SECONDS * 1000)}")
            cursor.execute("SELECT 1 FROM django_migrations LIMIT 1")
        return None
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        connection.close()
        return type(error).__name__


def _check_broker() -> str | None:
    """The last broker check of this process if it is under BROKER_CHECK_CACHE_SECONDS old, else a
    new one. The lock makes concurrent probes wait for one check instead of each opening one."""
    global _broker_check_cache
    if settings.EMBEDDED_BROKER:
        return None
    with _broker_check_lock:
        if _broker_check_cache is None or time.monotonic() - _broker_check_cache[0] >= BROKER_CHECK_CACHE_SECONDS:
            _broker_check_cache = (time.monotonic(), _connect_broker())
        return _broker_check_cache[1]


def _connect_broker() -> str | None:
    """An AMQP protocol handshake with a short timeout: the port being open is not enough."""
    from eventplatform.broker import connect_blocking

    try:  # ready while any node of the cluster answers: every process fails over to it
        connect_blocking(settings.BROKER_URLS, timeout=CHECK_TIMEOUT_SECONDS).close()
        return None
    except (OSError, Exception) as error:  # noqa: BLE001 - any failure means not ready
        return type(error).__name__


def readyz(request: HttpRequest) -> JsonResponse:
    failures = {
        name: reason for name, reason in (("database", _check_database()), ("broker", _check_broker())) if reason
    }
    if failures:
        return JsonResponse({"status": "unavailable", "failing": sorted(failures), "details": failures}, status=503)
    return JsonResponse({"status": "ok"})


def metrics_view(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)
