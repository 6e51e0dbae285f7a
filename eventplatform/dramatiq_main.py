"""`python -m eventplatform.dramatiq_main ARGS`: Dramatiq's own `dramatiq` command, logging JSON.

`rundramatiq` execs this instead of the `dramatiq` script. The `dramatiq` command configures
logging itself (`logging.basicConfig` with its plain `[time] [PID] ...` format) in the main process
and in every worker and fork process, before Django's LOGGING is loaded there, so its start-up and
shutdown lines ("Dramatiq '2.2.1' is booting up.", "Worker process is ready for action.", ...) would
not be JSON. Here it runs with `--skip-logging`, and the root logger gets our structlog formatter
instead. The handler looks up `sys.stderr` at each record, not once: in worker and fork processes
Dramatiq points `sys.stderr` at a pipe that its main process copies, a record per write, to its
own stderr, so lines from several processes never interleave. Once a worker has loaded Django
(`django_dramatiq.setup`), Django's LOGGING (eventplatform/settings/logging.py) takes over there,
writing to that same pipe.

If this process dies, its workers get SIGHUP/EOF and stop like under plain `dramatiq`.
"""

from __future__ import annotations

import logging
import sys

from dramatiq import cli

from eventplatform.logging import build_formatter, log_format, log_level


class CurrentStderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever `sys.stderr` is at the time of the record."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # under the handler's lock (Handler.handle holds it)
        super().emit(record)


def configure_logging() -> None:
    handler = CurrentStderrHandler()
    handler.setFormatter(build_formatter(log_format()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(log_level())
    logging.getLogger("pika").setLevel(logging.ERROR)
    logging.captureWarnings(True)  # a library's DeprecationWarning becomes a JSON line too


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = cli.make_argument_parser().parse_args([*(sys.argv[1:] if argv is None else argv), "--skip-logging"])
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main())
