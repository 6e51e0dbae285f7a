from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

import dramatiq
import structlog
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler, get_internal_wsgi_application
from django.db import connection

from apps.outbox.relay import BrokerEnqueuePublisher, Relay
from eventplatform.actors import actor_modules_import
from eventplatform.procfile import procfile_command

log = structlog.get_logger("pipeline")

STOP_SECONDS = 10  # Ctrl-C / SIGTERM: what a child gets to finish before it is killed
SAMPLE_PHONE = "+4915112345678"  # CONTRACT section 4's example attendee


def default_bind() -> str:
    """`make run PORT=8001` (or PORT/HOST in the environment) picks the bind."""
    return f"{os.environ.get('HOST') or '127.0.0.1'}:{os.environ.get('PORT') or '8000'}"


def split_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    try:
        return host.strip("[]") or "127.0.0.1", int(port)
    except ValueError:
        raise CommandError(f"--bind must be HOST:PORT, not {bind!r}.") from None


def base_url(host: str, port: int) -> str:
    """The URL to print: a wildcard bind is reached on loopback."""
    shown = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def port_busy(host: str, port: int) -> CommandError:
    return CommandError(
        f"Port {port} on {host} is already in use (another `make run`?). Nothing was started. "
        f"Choose another port: make run PORT={port + 1}"
    )


def check_port_free(host: str, port: int) -> None:
    """Bind and let go (as the web server will, SO_REUSEADDR included), so a busy port stops us
    before the relay, worker and scheduler start sending what is pending."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise port_busy(host, port) from error


def live_channels() -> dict[str, str]:
    """Where each channel's messages go, for the banner: a newcomer sees at once what is off."""
    backend = settings.EMAIL_BACKEND
    if backend.endswith("console.EmailBackend"):
        email = "console (printed here)"
    elif backend.endswith("smtp.EmailBackend"):
        email = f"SMTP {settings.EMAIL_HOST}:{settings.EMAIL_PORT}"
    else:
        email = backend
    if settings.SMS_API_URL:
        sms = f"SMS API {settings.SMS_API_URL}"
    elif settings.SMS_CONSOLE:
        sms = "console (printed here)"
    else:
        sms = "off (set SMS_API_URL, SMS_ACCOUNT_SID, SMS_AUTH_TOKEN, SMS_FROM)"
    return {"email": email, "sms": sms}


def next_steps(url: str) -> str:
    """What to do now, printed once the server answers (so it is the last thing on the screen)."""
    from django.contrib.auth import get_user_model

    from apps.webhooks.models import Portal

    portals = list(Portal.objects.filter(active=True).order_by("created_at").values_list("slug", flat=True)[:20])
    slug = "demo" if "demo" in portals else (portals[0] if portals else "SLUG")
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else sys.executable
    manage = f"DJANGO_SETTINGS_MODULE={os.environ.get('DJANGO_SETTINGS_MODULE', '')} {python} manage.py"
    channels = live_channels()
    # With SMS live the sample carries a phone (the contract's example), so the command shows both channels.
    phone = f" --phone {SAMPLE_PHONE}" if settings.SMS_API_URL or settings.SMS_CONSOLE else ""
    lines = [
        f"eventplatform is running at {url}/  (Ctrl-C stops it)",
        f"E-mail: {channels['email']}",
        f"SMS:    {channels['sms']}",
        "",
        "Send a signed sample webhook from another terminal:",
        f"    {manage} send_test_webhook {slug} --url {url}{phone}",
        f"Admin: {url}/admin/    Pipeline status: {url}/admin/status/",
    ]
    if not portals:
        lines += ["No active portal yet: create one with", f"    {manage} create_portal SLUG"]
    if not get_user_model().objects.filter(is_superuser=True).exists():
        lines += ["No admin user yet: create one with", f"    {manage} createsuperuser"]
    rule = "=" * 78
    return "\n".join([rule, *(f"  {line}" if line else "" for line in lines), rule])


class QuietRequestHandler(WSGIRequestHandler):
    """runserver's handler without its access line per request: what happened is logged by the
    views (webhook.stored, webhook.rejected) and by django.request for other 4xx/5xx, once."""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http.request", request=self.requestline[:200], status=str(args[1]) if len(args) > 1 else "")


class Command(BaseCommand):
    help = (
        "Run web + relay + worker + scheduler (+ the bounce receiver when EMAIL_BOUNCE_ADDRESS is set) together "
        "in the foreground until Ctrl-C or SIGTERM (what `make run` starts). Embedded mode (no "
        "DATABASE_URL/BROKER_URL): one process, SQLite and the in-process broker. Otherwise: gunicorn, run_relay, "
        "rundramatiq, send_reminders --every and run_bounce_receiver as child processes. The port is bound "
        "first: a busy one stops it before anything else starts."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--bind",
            default=None,
            help="HOST:PORT the web process listens on (default: $HOST:$PORT, else 127.0.0.1:8000).",
        )
        parser.add_argument(
            "--scheduler-every",
            type=float,
            default=settings.SCHEDULER_INTERVAL_SECONDS,
            help="Seconds between the scheduler's rounds (reminders and sweepers).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        host, port = split_bind(options["bind"] or default_bind())
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C and a supervisor's stop alike
            signal.signal(signum, lambda *_: stop.set())
        if settings.EMBEDDED_BROKER:
            self._run_embedded(host, port, options["scheduler_every"], stop)
        else:
            self._run_processes(host, port, options["scheduler_every"], stop)

    def _announce_when_ready(self, url: str, stop: threading.Event) -> threading.Thread:
        def announce() -> None:
            while not _answers(url):
                if stop.wait(0.2):
                    return
            try:
                self.stdout.write(next_steps(url))
                self.stdout.flush()
            finally:
                connection.close()  # this thread's own connection

        thread = threading.Thread(target=announce, name="announce", daemon=True)
        thread.start()
        return thread

    def _run_embedded(self, host: str, port: int, scheduler_every: float, stop: threading.Event) -> None:
        try:  # bound before anything else starts
            server = ThreadedWSGIServer((host, port), QuietRequestHandler, ipv6=":" in host)
        except OSError as error:
            raise port_busy(host, port) from error
        channels = live_channels()
        log.warning(
            "pipeline.embedded_mode",
            error_code="embedded_default",
            database=str(settings.DATABASES["default"]["NAME"]),
            broker="in-process StubBroker",
            email=channels["email"],
            sms=channels["sms"],
            hint="set DATABASE_URL and BROKER_URL to use PostgreSQL and RabbitMQ",
        )
        server.set_app(get_internal_wsgi_application())
        actor_modules_import()  # declares the actors and their queues on the in-process broker
        broker = dramatiq.get_broker()
        relay = Relay(
            publisher=BrokerEnqueuePublisher(broker),
            batch_size=settings.RELAY_BATCH_SIZE,
            poll_seconds=settings.RELAY_POLL_SECONDS,
            stop=stop,
        )
        relay_thread = threading.Thread(target=relay.run, name="relay", daemon=True)
        relay_thread.start()
        worker = dramatiq.Worker(broker, worker_threads=2)
        worker.start()
        # The scheduler's rounds in a thread; its gauge is served by the web process's /metrics.
        from apps.notifications.scheduler import scheduler_loop
        from apps.support.management.commands.send_reminders import JOBS

        scheduler_thread = threading.Thread(
            target=scheduler_loop,
            name="scheduler",
            daemon=True,
            kwargs={"jobs": JOBS, "every": scheduler_every, "stop": stop},
        )
        scheduler_thread.start()
        bounces = None
        if settings.EMAIL_BOUNCE_ADDRESS:  # aiosmtpd runs its own thread
            from apps.notifications.channels.email.bounce_receiver import bounce_receiver_controller

            smtp_host, smtp_port = split_bind(settings.BOUNCE_RECEIVER_BIND)
            bounces = bounce_receiver_controller(host=smtp_host, port=smtp_port, max_bytes=settings.BOUNCE_MAX_BYTES)
            bounces.start()
        web_thread = threading.Thread(target=server.serve_forever, name="web", daemon=True)
        web_thread.start()
        url = base_url(host, port)
        log.info("pipeline.listening", url=url)
        self._announce_when_ready(url, stop)
        try:
            while not stop.wait(1):
                pass
        finally:
            stop.set()
            log.info("pipeline.stopping")
            server.shutdown()
            server.server_close()
            worker.stop(timeout=STOP_SECONDS * 1000)
            relay_thread.join(timeout=5)
            scheduler_thread.join(timeout=5)
            if bounces is not None:
                bounces.stop()
            log.info("pipeline.stopped")

    def _run_processes(self, host: str, port: int, scheduler_every: float, stop: threading.Event) -> None:
        check_port_free(host, port)
        log.info("pipeline.started", database="DATABASE_URL", broker="BROKER_URL", **live_channels())
        # The Procfile's lines, with what a one-machine run chooses: this bind, two web workers, one
        # worker process, the scheduler's interval.
        commands = [
            procfile_command(
                "web",
                environ={**os.environ, "HOST": f"[{host}]" if ":" in host else host, "PORT": str(port)},
                options={"--workers": "2", "--graceful-timeout": str(STOP_SECONDS // 2)},
            ),
            procfile_command("relay"),
            procfile_command("worker", options={"--processes": "1", "--threads": "4"}),
            procfile_command("scheduler", options={"--every": str(scheduler_every)}),
        ]
        if settings.EMAIL_BOUNCE_ADDRESS:  # the bounce receiver (CONTRACT section 8) has work only then
            commands.append(procfile_command("bounces"))
        # The web server first: should it fail to bind after all (a race with another process), the
        # others are never started.
        children = [subprocess.Popen(commands[0], env=os.environ.copy())]
        url = base_url(host, port)
        while not _answers(url):
            if children[0].poll() is not None:
                raise CommandError(
                    f"The web process exited before answering on {host}:{port} (its output is "
                    "above); nothing else was started."
                )
            if stop.wait(0.2):
                break
        if not stop.is_set():
            children += [subprocess.Popen(command, env=os.environ.copy()) for command in commands[1:]]
            self.stdout.write(next_steps(url))
            self.stdout.flush()
        while not stop.wait(1):
            if any(child.poll() is not None for child in children):
                log.error("pipeline.child_exited", error_code="process_exited")
                break
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()  # its own children (rundramatiq's workers) were signalled by it already
                child.wait(timeout=5)
        log.info("pipeline.stopped")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False
