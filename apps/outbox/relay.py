"""The outbox relay: publishes due outbox rows to the broker, marks them only once confirmed.

Several relays may run at once: each claims its batch with SELECT ... FOR UPDATE SKIP LOCKED, so
no row is published by two of them at the same time. If a relay dies after the broker confirmed
but before its COMMIT, the rows are published again later; every consumer deduplicates by message
id (= outbox id), so that costs a little work and never a duplicate effect.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dramatiq
import structlog
from django.db import connection, transaction
from django.db.utils import DatabaseError, InterfaceError
from django.utils import timezone

from apps.outbox.models import OutboxMessage
from apps.outbox.publisher import BrokerUnavailable, MessagesRejected, OutgoingMessage
from eventplatform import metrics

log = structlog.get_logger("relay")

NOTIFY_CHANNEL = "outbox_new"
MAX_BACKOFF_SECONDS = 10.0
# A row RabbitMQ returned or nacked waits 5 s, 10 s, 20 s ... at most 10 minutes before its next
# attempt: it no longer holds the head of the queue (rows are picked by available_at) and still
# goes out by itself once the cause (a deleted queue, a full one) is fixed.
REJECTED_FIRST_BACKOFF_SECONDS = 5.0
REJECTED_MAX_BACKOFF_SECONDS = 600.0


class Publisher(Protocol):
    def publish_batch(self, messages: Sequence[OutgoingMessage]) -> None: ...


class BrokerEnqueuePublisher:
    """Publishes through a Dramatiq broker's own enqueue (the embedded StubBroker in `make run`)."""

    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker

    def publish_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        for message in messages:
            self.broker.enqueue(dramatiq.Message.decode(message.body))


def _to_outgoing(row: OutboxMessage | _DueRow) -> OutgoingMessage:
    message = dramatiq.Message(
        queue_name=row.queue_name,
        actor_name=row.actor_name,
        args=(),
        kwargs=row.kwargs,
        options=row.options,
        message_id=str(row.id),
        message_timestamp=int(row.created_at.timestamp() * 1000),
    )
    return OutgoingMessage(queue_name=row.queue_name, body=message.encode(), message_id=str(row.id))


@dataclass(frozen=True)
class _DueRow:
    id: uuid.UUID
    queue_name: str
    actor_name: str
    kwargs: dict[str, Any]
    options: dict[str, Any]
    created_at: dt.datetime


_TABLE = OutboxMessage._meta.db_table
# PostgreSQL: the batch's two statements as plain SQL, built once; compiling them through the ORM
# was half the relay's CPU at a steady 100 webhooks/s (a batch of two or three rows each time).
_SELECT_DUE = (
    f"SELECT id, queue_name, actor_name, kwargs, options, created_at FROM {_TABLE} "
    "WHERE published_at IS NULL AND available_at <= %s ORDER BY available_at LIMIT %s "
    "FOR UPDATE SKIP LOCKED"
)
_MARK_PUBLISHED = f"UPDATE {_TABLE} SET published_at = %s WHERE id = ANY(%s)"


def _lock_due(batch_size: int) -> Sequence[OutboxMessage | _DueRow]:
    if connection.vendor != "postgresql":
        return list(
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(published_at__isnull=True, available_at__lte=timezone.now())
            .order_by("available_at")
            .only("id", "queue_name", "actor_name", "kwargs", "options", "created_at")[:batch_size]
        )
    with connection.cursor() as cursor:
        cursor.execute(_SELECT_DUE, [timezone.now(), batch_size])
        return [
            _DueRow(row_id, queue, actor, json.loads(kwargs), json.loads(options), created_at)
            for row_id, queue, actor, kwargs, options, created_at in cursor.fetchall()
        ]


def _mark_published(ids: list[uuid.UUID], at: dt.datetime) -> None:
    if connection.vendor != "postgresql":
        OutboxMessage.objects.filter(id__in=ids).update(published_at=at)
        return
    with connection.cursor() as cursor:
        cursor.execute(_MARK_PUBLISHED, [at, ids])


def _back_off_rejected(ids: list[uuid.UUID], at: dt.datetime) -> dict[uuid.UUID, int]:
    """Count one more attempt on each rejected row and push its available_at back; {id: attempts}.

    Through the ORM on every database: a rejected row is rare (unlike the batch's select and
    update above, no hot path), and the rows are this transaction's, locked by _lock_due."""
    attempts = {}
    for row in OutboxMessage.objects.filter(id__in=ids, published_at__isnull=True).only("id", "publish_attempts"):
        delay = min(REJECTED_FIRST_BACKOFF_SECONDS * 2**row.publish_attempts, REJECTED_MAX_BACKOFF_SECONDS)
        attempts[row.id] = row.publish_attempts + 1
        OutboxMessage.objects.filter(id=row.id).update(
            publish_attempts=attempts[row.id], available_at=at + dt.timedelta(seconds=delay)
        )
    return attempts


def outbox_publish_batch(*, publisher: Publisher, batch_size: int) -> int:
    """Publish up to batch_size due rows; returns how many were confirmed.

    The row locks are held across the publish: a second relay skips these rows instead of
    publishing them too. On BrokerUnavailable the transaction rolls back and the rows stay.
    When RabbitMQ confirmed the batch but returned or nacked some rows (MessagesRejected), the
    others are marked published and the rejected ones backed off in the same transaction: one bad
    row no longer fails its whole batch, batch after batch. Dying before the COMMIT leaves every
    row as it was (the confirmed ones are published again; consumers deduplicate).
    """
    with transaction.atomic():
        rows = _lock_due(batch_size)
        if not rows:
            return 0
        started = time.perf_counter()
        rejected: set[str] = set()
        try:
            publisher.publish_batch([_to_outgoing(row) for row in rows])
        except MessagesRejected as error:
            rejected = error.rejected_ids
            if not rejected:  # nothing to single out: treat as the whole batch failing
                raise
        confirmed_at = timezone.now()
        if rejected:
            attempts = _back_off_rejected([row.id for row in rows if str(row.id) in rejected], confirmed_at)
            metrics.OUTBOX_REJECTED.inc(len(attempts))
            log.error(
                "relay.message_rejected",
                error_code="outbox_message_rejected",
                outbox_ids=sorted(str(row_id) for row_id in attempts),
                attempts=sorted(attempts.values()),
                queues=sorted({row.queue_name for row in rows if str(row.id) in rejected}),
            )
            rows = [row for row in rows if str(row.id) not in rejected]
            if not rows:
                return 0
        _mark_published([row.id for row in rows], confirmed_at)
    metrics.OUTBOX_PUBLISH_LATENCY.observe(time.perf_counter() - started)
    metrics.OUTBOX_BATCH_SIZE.observe(len(rows))
    metrics.OUTBOX_PUBLISHED.inc(len(rows))
    for row in rows:
        metrics.OUTBOX_COMMIT_TO_PUBLISH.observe((confirmed_at - row.created_at).total_seconds())
    # One line per batch, not per row; the correlation ids make each webhook's story searchable.
    log.info(
        "relay.published",
        count=len(rows),
        correlation_ids=sorted({row.options.get("correlation_id") for row in rows} - {None}),
    )
    return len(rows)


def outbox_backlog() -> tuple[int, float]:
    """(due unpublished rows, age in seconds of the oldest one) for the lag metrics."""
    now = timezone.now()
    due = OutboxMessage.objects.filter(published_at__isnull=True, available_at__lte=now)
    oldest = due.order_by("available_at").values_list("available_at", flat=True).first()
    return due.count(), (now - oldest).total_seconds() if oldest else 0.0


class Waiter:
    """Sleeps until a new outbox row is committed or `timeout` passes.

    PostgreSQL: LISTEN on a dedicated autocommit connection (a trigger NOTIFYs on insert, delivered
    at COMMIT). Elsewhere (SQLite, embedded mode): an in-process event set on commit.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self._listen = None
        if connection.vendor == "postgresql":
            import psycopg

            params = connection.get_connection_params()
            params.pop("cursor_factory", None)
            params.pop("context", None)
            self._listen = psycopg.connect(**params, autocommit=True)
            self._listen.execute(f"LISTEN {NOTIFY_CHANNEL}")
        else:
            from apps.outbox import services

            services.wakeup_local_relay = self._event.set

    def wait(self, timeout: float, coalesce: float = 0.0) -> None:
        """Return on the next commit of new rows (or after `timeout`), `coalesce` seconds late:
        at a few hundred webhooks a second, waking per commit would publish batches of one row
        (a round trip to RabbitMQ each); a few milliseconds gather them into one batch."""
        if self._listen is not None:
            for _ in self._listen.notifies(timeout=timeout, stop_after=1):
                break
            if coalesce:
                time.sleep(coalesce)
                for _ in self._listen.notifies(timeout=0):  # drain what arrived meanwhile
                    pass
            return
        self._event.wait(timeout)
        self._event.clear()

    def close(self) -> None:
        if self._listen is not None:
            self._listen.close()


class Relay:
    def __init__(
        self,
        *,
        publisher: Publisher,
        batch_size: int,
        poll_seconds: float,
        stop: threading.Event | None = None,
        backlog_every_seconds: float = 5.0,
        coalesce_seconds: float = 0.0,
    ) -> None:
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.stop = stop or threading.Event()
        self.backlog_every_seconds = backlog_every_seconds
        self.coalesce_seconds = coalesce_seconds
        self._broker_down_since: float | None = None
        self._last_backlog = 0.0

    def run(self, *, waiter_factory: Callable[[], Waiter] = Waiter) -> None:
        log.info("relay.started", batch_size=self.batch_size, poll_seconds=self.poll_seconds)
        waiter: Waiter | None = None
        backoff = 0.5
        while not self.stop.is_set():
            try:
                if waiter is None:
                    waiter = waiter_factory()
                published = outbox_publish_batch(publisher=self.publisher, batch_size=self.batch_size)
                self._broker_recovered()
                backoff = 0.5
                self._report_backlog()
                if published < self.batch_size:
                    waiter.wait(self.poll_seconds, coalesce=self.coalesce_seconds)
            except BrokerUnavailable as error:
                self._broker_failed(error)
                metrics.OUTBOX_PUBLISH_FAILURES.inc()
                self._report_backlog()
                self.stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            except (DatabaseError, InterfaceError) as error:
                log.error("relay.database_error", error_code="database_unavailable", error=str(error))
                waiter = self._reset_database(waiter)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            except Exception as error:  # the relay must outlive any single bad batch
                log.exception("relay.error", error_code="relay_error", error=str(error))
                waiter = self._reset_database(waiter)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        if waiter is not None:
            waiter.close()
        log.info("relay.stopped")

    def _broker_failed(self, error: Exception) -> None:
        """Log once per outage, not once per row or per retry."""
        if self._broker_down_since is None:
            self._broker_down_since = time.monotonic()
            log.error("relay.broker_unavailable", error_code="broker_unavailable", error=str(error))

    def _broker_recovered(self) -> None:
        if self._broker_down_since is not None:
            log.info("relay.broker_recovered", outage_seconds=round(time.monotonic() - self._broker_down_since, 1))
            self._broker_down_since = None

    def _report_backlog(self) -> None:
        """Keep the lag gauges fresh, during a broker outage above all (that is when they matter)."""
        now = time.monotonic()
        if now - self._last_backlog >= self.backlog_every_seconds:
            self._last_backlog = now
            pending, lag = outbox_backlog()
            metrics.OUTBOX_PENDING.set(pending)
            metrics.OUTBOX_LAG.set(lag)

    @staticmethod
    def _reset_database(waiter: Waiter | None) -> Waiter | None:
        if waiter is not None:
            try:
                waiter.close()
            except Exception:  # noqa: BLE001 - the connection is already broken
                pass
        connection.close()
        return None
