from __future__ import annotations

import datetime as dt
import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from apps.notifications.delivery import notification_reports_apply_pending
from apps.notifications.models import SchedulerHeartbeat
from apps.notifications.rescue import notifications_rescue_stalled
from apps.notifications.scheduler import Job, scheduler_loop, scheduler_run_job
from apps.privacy.retention import data_retention_run
from apps.registrations.failures import webhook_events_rescue_unapplied
from apps.registrations.reminders import reminder_windows, reminders_create
from eventplatform.observability import start_metrics_server


def _reminders(now: dt.datetime) -> dict[str, Any]:
    return {kind: len(created) for kind, created in reminders_create(now=now).items()}


def _rescue_stalled(now: dt.datetime) -> dict[str, Any]:
    return {"rescued": notifications_rescue_stalled(now=now)}


def _apply_reports(now: dt.datetime) -> dict[str, Any]:
    return notification_reports_apply_pending()


def _rescue_unapplied(now: dt.datetime) -> dict[str, Any]:
    return {"rescued": webhook_events_rescue_unapplied(now=now)}


RETENTION_EVERY = dt.timedelta(days=1)


def _retention(now: dt.datetime) -> dict[str, Any]:
    """Daily: the job runs every round, but purges only when its last purge (kept in its heartbeat's
    result) is a day old, so a restarted scheduler neither skips a day nor purges twice."""
    previous = SchedulerHeartbeat.objects.filter(name="retention").values_list("last_result", flat=True).first() or {}
    purged_at = parse_datetime(previous.get("purged_at") or "")
    if purged_at is not None and now - purged_at < RETENTION_EVERY:
        return {**previous, "idle": True}  # the last purge's counts stay in the heartbeat; nothing done now
    return {**data_retention_run(now=now), "purged_at": now.isoformat()}


# The scheduler's periodic jobs, in the order each round runs them (names: SchedulerHeartbeat.name,
# the `task` label of the scheduler metrics).
JOBS = [
    Job("reminders", _reminders),
    Job("notifications_rescue_stalled", _rescue_stalled),
    Job("notification_reports_apply_pending", _apply_reports),
    Job("webhook_events_rescue_unapplied", _rescue_unapplied),
    Job("retention", _retention),
]


class Command(BaseCommand):
    help = (
        "Create reminder_24h / reminder_1h notifications for active registrations whose event starts "
        "within the reminder windows, rescue notifications whose retry message was lost, and re-enqueue "
        "accepted webhook events still unapplied, apply delivery reports that arrived before their send "
        "was recorded; once a day, the data retention job. Once (for cron), "
        "or with --every SECONDS as the "
        "scheduler process until SIGTERM/SIGINT. Safe to run twice or concurrently."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--list", action="store_true", help="Also print every notification created (once mode).")
        parser.add_argument(
            "--every",
            type=float,
            metavar="SECONDS",
            help="Keep running: every SECONDS, run every job, until SIGTERM/SIGINT.",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=settings.SCHEDULER_METRICS_PORT,
            help="Prometheus exporter port with --every (0 disables it).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["every"] is not None:
            self._run_forever(options["every"], options["metrics_port"])
        else:
            self._run_once(options["list"])

    def _run_forever(self, every: float, metrics_port: int) -> None:
        if every <= 0:
            raise CommandError("--every must be a positive number of seconds.")
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        if metrics_port:
            start_metrics_server(metrics_port)
        scheduler_loop(jobs=JOBS, every=every, stop=stop)

    def _run_once(self, list_created: bool) -> None:
        """What cron runs: one round of the scheduler's jobs (same locks, same heartbeats), with the
        reminder windows printed. Exits 1 if a job failed, so cron reports it."""
        now = timezone.now()
        created: dict[str, list[Any]] = {}

        def reminders_listed(now: dt.datetime) -> dict[str, Any]:
            created.update(reminders_create(now=now))
            return {kind: len(notifications) for kind, notifications in created.items()}

        runs = {JOBS[0].name: scheduler_run_job(job=Job(JOBS[0].name, reminders_listed), now=now)}
        for kind, (start, end) in reminder_windows(now).items():
            self.stdout.write(
                f"{kind}: created {len(created.get(kind, []))} notification(s) for events starting in "
                f"({start.isoformat(timespec='seconds')}, {end.isoformat(timespec='seconds')}]"
            )
            if list_created:
                for notification in created.get(kind, []):
                    self.stdout.write(
                        f"  {notification.id} {notification.channel} {notification.registration.external_id}"
                    )
        for job in JOBS[1:]:
            runs[job.name] = scheduler_run_job(job=job, now=now)
        for name, run in runs.items():
            self.stdout.write(f"{name}: {run.outcome} {run.result}")
        failed = [name for name, run in runs.items() if run.outcome == "failed"]
        if failed:
            raise CommandError(f"failed: {', '.join(failed)} (see the log lines with scheduler_job_failed)")
