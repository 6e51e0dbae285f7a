from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import structlog
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.notifications.channels.email.bounce_receiver import bounce_receiver_controller
from eventplatform.observability import start_metrics_server

log = structlog.get_logger("notifications.bounce_receiver")


def split_bind(bind: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    try:
        return host.strip("[]") or "127.0.0.1", int(port)
    except ValueError:
        raise CommandError(f"--bind must be HOST:PORT, not {bind!r}.") from None


class Command(BaseCommand):
    help = (
        "Receive delivery status notifications and abuse reports for EMAIL_BOUNCE_ADDRESS over SMTP "
        "(the bounce domain's MX or the MTA's transport points here) and record them; runs until SIGTERM. "
        "Safe to run several (each report is one transaction; a repeated one is kept once)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--bind", default=settings.BOUNCE_RECEIVER_BIND, help="HOST:PORT to listen on for SMTP.")
        parser.add_argument(
            "--max-bytes",
            type=int,
            default=settings.BOUNCE_MAX_BYTES,
            help="Larger messages are refused with 552.",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=settings.BOUNCE_METRICS_PORT,
            help="Prometheus exporter port (0 disables it).",
        )
        parser.add_argument(
            "--threads", type=int, default=8, help="Threads parsing and recording reports (one DB connection each)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.EMAIL_BOUNCE_ADDRESS:
            raise CommandError("run_bounce_receiver needs EMAIL_BOUNCE_ADDRESS (the address it receives reports for).")
        host, port = split_bind(options["bind"])
        # aiosmtpd logs every SMTP command at INFO; what a report did is logged by bounce_receiver.py.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        if options["metrics_port"]:
            start_metrics_server(options["metrics_port"])
        controller = bounce_receiver_controller(
            host=host, port=port, max_bytes=options["max_bytes"], threads=options["threads"]
        )
        try:
            controller.start()
        except OSError as error:
            raise CommandError(f"Cannot listen on {host}:{port}: {error}") from error
        log.info(
            "bounce_receiver.listening",
            bind=f"{host}:{port}",
            max_bytes=options["max_bytes"],
            metrics_port=options["metrics_port"],
        )
        try:
            stop.wait()
        finally:
            # Stops taking connections; a message being recorded finishes (the pool is shut down
            # waiting), so its MTA gets its answer or, if cut off, sends it again.
            controller.stop()
            controller.handler.close()
            log.info("bounce_receiver.stopped")
