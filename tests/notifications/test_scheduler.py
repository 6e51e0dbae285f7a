"""The scheduler (`send_reminders --every`): a real process that keeps sending what is due, writes
its heartbeat, exports its gauge, stops cleanly on SIGTERM; job locks; a failing job does not stop it."""

from __future__ import annotations

import datetime as dt
import re
import signal
import threading
import time
import urllib.request

import pytest
from django.db import connection, connections
from django.utils import timezone

from apps.notifications.models import Notification, SchedulerHeartbeat
from apps.notifications.scheduler import LOCK_NAMESPACE, Job, _lock_key, scheduler_loop, scheduler_run_job
from apps.webhooks.models import Portal
from eventplatform.procfile import procfile_command
from tests.registrations.factories import RegistrationFactory
from tests.support.polling import free_port
from tests.support.processes import ManagedProcess, process_env, wait_until


def heartbeat(name: str) -> dt.datetime | None:
    row = SchedulerHeartbeat.objects.filter(name=name).first()
    return row.last_finished_at if row else None


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_send_reminders_every_second_sends_what_is_due_beats_and_stops_on_sigterm(portal: Portal) -> None:
    port = free_port()
    scheduler = ManagedProcess(
        "scheduler",
        procfile_command("scheduler", options={"--every": "1", "--metrics-port": str(port)}),
        process_env(),
    )
    # A second scheduler at the same time (safe concurrently: the job locks keep them from doubling work)
    second = ManagedProcess(
        "scheduler-2",
        procfile_command("scheduler", options={"--every": "1", "--metrics-port": "0"}),
        process_env(),
    )
    try:
        wait_until(lambda: heartbeat("reminders"), timeout=60, what="the first round")
        first_beat = heartbeat("reminders")
        # Given a registration that becomes due while the scheduler runs
        starts_at = timezone.now() + dt.timedelta(minutes=30)
        RegistrationFactory(
            portal=portal,
            external_id="R-SOON",
            email="ada@example.org",
            event_name="PyData Berlin",
            event_starts_at=starts_at,
        )
        # Then a later round creates its reminder, and the heartbeat advances
        wait_until(
            lambda: Notification.objects.filter(registration__external_id="R-SOON", kind="reminder_1h").exists(),
            timeout=60,
            what="the reminder",
        )
        wait_until(lambda: heartbeat("reminders") > first_beat, timeout=30, what="the heartbeat to advance")
        for name in ("notifications_rescue_stalled", "webhook_events_rescue_unapplied"):
            assert heartbeat(name) is not None, name
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            exported = response.read().decode()
        stamp = re.search(r'eventplatform_scheduler_last_run_timestamp_seconds\{task="reminders"\} (\S+)', exported)
        assert stamp and abs(float(stamp.group(1)) - time.time()) < 60, exported[-2000:]
        time.sleep(2)  # a few more rounds of both
        assert Notification.objects.filter(kind="reminder_1h").count() == 1  # once, over both schedulers' rounds
        assert second.alive(), second.output()[-3000:]
        # When SIGTERM arrives, Then each exits cleanly
        for process in (scheduler, second):
            process.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            assert process.process.wait(timeout=30) == 0, process.output()[-3000:]
            print(f"{process.name} stopped {time.monotonic() - started:.2f} s after SIGTERM")
            assert "scheduler_job_failed" not in process.output()
    finally:
        scheduler.stop()
        second.stop()


@pytest.mark.django_db(transaction=True)
def test_a_job_another_scheduler_holds_is_skipped_not_run_twice() -> None:
    runs: list[int] = []
    job = Job("probe_job", lambda now: runs.append(1) or {"n": len(runs)})
    other = connections.create_connection("default")  # a second scheduler's session
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_NAMESPACE, _lock_key("probe_job")])
        assert scheduler_run_job(job=job).outcome == "skipped" and runs == []
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_NAMESPACE, _lock_key("probe_job")])
        run = scheduler_run_job(job=job)
        assert (run.outcome, run.result, runs) == ("ran", {"n": 1}, [1])
        with other.cursor() as cursor:  # and the lock was released after the run
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, _lock_key("probe_job")])
            assert cursor.fetchone()[0] is True
    finally:
        other.close()


@pytest.mark.django_db(transaction=True)
def test_a_failing_job_is_recorded_and_the_loop_goes_on() -> None:
    rounds: list[int] = []

    def broken(now: object) -> dict[str, int]:
        raise RuntimeError("provider table missing")

    def fine(now: object) -> dict[str, int]:
        rounds.append(1)
        return {"rounds": len(rounds)}

    stop = threading.Event()

    def run() -> None:
        try:
            scheduler_loop(jobs=[Job("broken_job", broken), Job("fine_job", fine)], every=0.05, stop=stop)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_until(lambda: len(rounds) >= 3, timeout=30, what="three rounds")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    broken_beat = SchedulerHeartbeat.objects.get(name="broken_job")
    assert "RuntimeError: provider table missing" in broken_beat.last_error
    fine_beat = SchedulerHeartbeat.objects.get(name="fine_job")
    assert fine_beat.last_error == "" and fine_beat.last_result["rounds"] >= 3


@pytest.mark.django_db
def test_a_round_that_did_nothing_is_logged_at_debug_only(caplog) -> None:
    """Idle is quiet (issue 21): a job run is an INFO line only when it did something."""
    import logging

    caplog.set_level(logging.DEBUG, logger="scheduler")
    results = iter([{"created": 0, "rescued": 0}, {"purged": 3, "idle": True}, {"created": 2}])
    job = Job("counting", lambda now: next(results))
    for _ in range(3):
        scheduler_run_job(job=job)
    ran = [record for record in caplog.records if "scheduler.job_ran" in record.getMessage()]
    assert [record.levelname for record in ran] == ["DEBUG", "DEBUG", "INFO"]
