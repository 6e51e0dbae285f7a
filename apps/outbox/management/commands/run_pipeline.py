from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

import dramatiq
import structlog
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from apps.outbox.relay import BrokerEnqueuePublisher, Relay
from eventplatform.actors import actor_modules_import

log = structlog.get_logger("pipeline")


class Command(BaseCommand):
    help = ("Run web + relay + worker + scheduler together in the foreground until Ctrl-C (what `make run` "
            "starts). Embedded mode (no DATABASE_URL/BROKER_URL): one process, SQLite and the in-process broker. "
            "Otherwise: gunicorn, run_relay, rundramatiq and send_reminders --every as child processes.")

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--bind", default="127.0.0.1:8000", help="Address the web process listens on.")
        parser.add_argument("--scheduler-every", type=float, default=settings.SCHEDULER_INTERVAL_SECONDS,
                            help="Seconds between the scheduler's rounds (reminders and sweepers).")

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.EMBEDDED_BROKER:
            self._run_embedded(options["bind"], options["scheduler_every"])
        else:
            self._run_processes(options["bind"], options["scheduler_every"])

    def _run_embedded(self, bind: str, scheduler_every: float) -> None:
        log.warning("pipeline.embedded_mode", database=str(settings.DATABASES["default"]["NAME"]),
                    broker="in-process StubBroker", email=settings.EMAIL_BACKEND,
                    hint="set DATABASE_URL and BROKER_URL to use PostgreSQL and RabbitMQ")
        actor_modules_import()  # declares the actors and their queues on the in-process broker
        broker = dramatiq.get_broker()
        stop = threading.Event()
        relay = Relay(publisher=BrokerEnqueuePublisher(broker), batch_size=settings.RELAY_BATCH_SIZE,
                      poll_seconds=settings.RELAY_POLL_SECONDS, stop=stop)
        relay_thread = threading.Thread(target=relay.run, name="relay", daemon=True)
        relay_thread.start()
        worker = dramatiq.Worker(broker, worker_threads=2)
        worker.start()
        # The scheduler's rounds in a thread; its gauge is served by the web process's /metrics.
        from apps.notifications.management.commands.send_reminders import JOBS
        from apps.notifications.scheduler import scheduler_loop

        scheduler_thread = threading.Thread(target=scheduler_loop, name="scheduler", daemon=True,
                                            kwargs={"jobs": JOBS, "every": scheduler_every, "stop": stop})
        scheduler_thread.start()
        try:
            call_command("runserver", bind, use_reloader=False, use_threading=True)
        finally:
            stop.set()
            worker.stop()
            relay_thread.join(timeout=5)
            scheduler_thread.join(timeout=5)

    def _run_processes(self, bind: str, scheduler_every: float) -> None:
        log.info("pipeline.started", database="DATABASE_URL", broker="BROKER_URL")
        python = sys.executable
        commands = [
            [python, "-m", "gunicorn", "eventplatform.wsgi", "--bind", bind, "--workers", "2"],
            [python, "manage.py", "run_relay"],
            [python, "manage.py", "rundramatiq", "--processes", "1", "--threads", "4"],
            [python, "manage.py", "send_reminders", "--every", str(scheduler_every)],
        ]
        children = [subprocess.Popen(command, env=os.environ.copy()) for command in commands]
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.wait(1):
            if any(child.poll() is not None for child in children):
                log.error("pipeline.child_exited", error_code="process_exited")
                break
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(timeout=30)
