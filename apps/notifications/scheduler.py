"""The scheduler (CONTRACT section 3): `send_reminders --every SECONDS` runs its periodic jobs
(reminders due, and the sweepers that rescue anything stuck) every SECONDS until SIGTERM/SIGINT.

Safe to run twice or concurrently: each job runs under a PostgreSQL advisory lock of its own
(`pg_try_advisory_lock`), so of two schedulers one runs a job and the other skips it that round;
both keep running, and if one dies the other takes over at its next round (a session lock dies with
its connection). The jobs themselves are idempotent too, so a lock lost mid-run does no harm.
A failing job is logged with `scheduler_job_failed` and the loop goes on. After each run the job's
heartbeat (SchedulerHeartbeat, read by the status page) is written; the gauge
`eventplatform_scheduler_last_run_timestamp_seconds` moves only when the job was done (here, or by
the scheduler holding its lock), so a job failing round after round raises SchedulerStalled.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from django.db import close_old_connections, connection
from django.utils import timezone

from apps.notifications.models import SchedulerHeartbeat
from eventplatform import metrics

log = structlog.get_logger("scheduler")

LOCK_NAMESPACE = 0x45505343  # "EPSC": the first key of every scheduler advisory lock


@dataclass(frozen=True)
class Job:
    """A periodic job: `run(now)` does the work and returns what it did (counts), for the heartbeat."""

    name: str
    run: Callable[[Any], dict[str, Any]]


def _lock_key(name: str) -> int:
    return zlib.crc32(name.encode()) - 2**31  # the signed int4 pg_try_advisory_lock(int4, int4) takes


@contextlib.contextmanager
def _job_lock(name: str) -> Iterator[bool]:
    """Hold the job's session-level advisory lock; yields False when another scheduler holds it.
    SQLite (embedded mode, one process) has no such locks and needs none."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, _lock_key(name)])
        acquired = bool(cursor.fetchone()[0])
    try:
        yield acquired
    finally:
        if acquired:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, _lock_key(name)])
            except Exception:  # noqa: BLE001 - a broken connection: closing it releases the lock
                connection.close()


def _heartbeat(job: Job, started: Any, duration_ms: int, result: dict[str, Any], error: str) -> None:
    try:
        SchedulerHeartbeat.objects.update_or_create(
            name=job.name,
            defaults={
                "last_started_at": started,
                "last_finished_at": timezone.now(),
                "last_duration_ms": duration_ms,
                "last_result": result,
                "last_error": error,
            },
        )
    except Exception:  # noqa: BLE001 - the database is down: the job has already logged it
        log.warning("scheduler.heartbeat_failed", job=job.name, error_code="scheduler_job_failed")


@dataclass(frozen=True)
class JobRun:
    outcome: str  # ran | skipped (another scheduler holds the job's lock) | failed
    result: dict[str, Any]


def scheduler_run_job(*, job: Job, now: Any = None) -> JobRun:
    """Run one job once, under its lock. Never raises: a failure is logged and recorded in the
    heartbeat.

    If the process dies mid-job, the lock goes with its connection and the heartbeat keeps the
    previous run: the next round (here or in another scheduler) runs the job again.
    """
    started, clock = timezone.now(), time.monotonic()
    try:
        with _job_lock(job.name) as acquired:
            if not acquired:
                log.debug("scheduler.job_skipped", job=job.name, reason="another scheduler runs it")
                metrics.SCHEDULER_LAST_RUN.labels(task=job.name).set(time.time())  # done, by the other one
                return JobRun("skipped", {})
            try:
                result = job.run(now or started)
            except Exception as error:  # one failing job must not stop the others
                duration_ms = int((time.monotonic() - clock) * 1000)
                metrics.SCHEDULER_JOB_FAILURES.labels(task=job.name).inc()
                log.error(
                    "scheduler.job_failed",
                    job=job.name,
                    error_code="scheduler_job_failed",
                    error=f"{type(error).__name__}: {error}",
                    exc_info=True,
                )
                _heartbeat(job, started, duration_ms, {}, traceback.format_exc(limit=20))
                return JobRun("failed", {})
    except Exception as error:  # noqa: BLE001 - the lock itself failed: the database is unreachable
        metrics.SCHEDULER_JOB_FAILURES.labels(task=job.name).inc()
        log.error(
            "scheduler.job_failed",
            job=job.name,
            error_code="scheduler_job_failed",
            error=f"{type(error).__name__}: {error}",
        )
        return JobRun("failed", {})
    metrics.SCHEDULER_LAST_RUN.labels(task=job.name).set(time.time())
    duration_ms = int((time.monotonic() - clock) * 1000)
    _heartbeat(job, started, duration_ms, result, "")
    # Idle rounds are the normal case (every few seconds): logged at DEBUG, so a quiet pipeline stays
    # quiet and a line means something happened.
    (log.info if did_something(result) else log.debug)(
        "scheduler.job_ran", job=job.name, duration_ms=duration_ms, **result
    )
    return JobRun("ran", result)


def did_something(result: dict[str, Any]) -> bool:
    """Whether a job's result counts any work (a reminder created, a row rescued or purged). A job
    that skipped its work this round says so with `"idle": True` (the daily retention job)."""
    if result.get("idle"):
        return False
    return any(isinstance(value, int) and not isinstance(value, bool) and value > 0 for value in result.values())


def scheduler_loop(*, jobs: list[Job], every: float, stop: threading.Event) -> None:
    """Run every job, then wait `every` seconds (or until `stop`), until `stop` is set. A stop
    request during a job lets that job finish; the loop then exits without starting another."""
    log.info("scheduler.started", every=every, jobs=[job.name for job in jobs])
    while not stop.is_set():
        for job in jobs:
            if stop.is_set():
                break
            close_old_connections()  # a connection broken by a database restart is replaced, not reused
            scheduler_run_job(job=job)
        stop.wait(every)
    connection.close()
    log.info("scheduler.stopped")
