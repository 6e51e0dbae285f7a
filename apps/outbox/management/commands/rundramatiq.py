"""`manage.py rundramatiq`: django_dramatiq's worker command, every line of it JSON.

django_dramatiq's command prints its plan (" * Discovered tasks module ...", " * Running dramatiq")
with plain `stdout.write` and execs the `dramatiq` script, whose own logging is plain text too.
This command (found before django_dramatiq's: our apps come first in INSTALLED_APPS) keeps its
options, logs those lines through structlog, and execs `python -m eventplatform.dramatiq_main`
(Dramatiq's own CLI, with our formatter) in its place. The exec replaces this process: a
supervisor's SIGTERM reaches Dramatiq's main process, which stops its workers.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import structlog
from django.core.management.base import OutputWrapper
from django_dramatiq.management.commands import rundramatiq

log = structlog.get_logger("worker")


class _LogLines:
    """A file-like sink turning django_dramatiq's progress lines into structured log lines."""

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip(" *"):
                log.info("worker.discovery", detail=line.strip(" *"))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class Command(rundramatiq.Command):
    help = "Runs Dramatiq workers (django_dramatiq's rundramatiq, every line logged as JSON)."

    def handle(self, *args: Any, **options: Any) -> None:
        if options["use_gevent"]:  # dramatiq-gevent has its own entry point; plain lines there
            return super().handle(*args, **options)
        self.stdout = OutputWrapper(_LogLines())
        arguments = [
            "--path",
            *options["path"],
            "--processes",
            str(options["processes"]),
            "--threads",
            str(options["threads"]),
            "--worker-shutdown-timeout",
            str(options["worker_shutdown_timeout"]),
        ]
        if options["watch_dir"]:
            arguments += ["--watch", options["watch_dir"]]
            if options["use_polling_watcher"]:
                arguments.append("--watch-use-polling")
        for function in options["forks"]:
            arguments += ["--fork-function", function]
        arguments += ["-v"] * (options["verbosity"] - 1)
        arguments += self.discover_tasks_modules()
        if options["queues"]:
            arguments += ["--queues", *options["queues"]]
        if options["pid_file"]:
            arguments += ["--pid-file", options["pid_file"]]
        if options["log_file"]:
            arguments += ["--log-file", options["log_file"]]
        if options["use_spawn"]:
            arguments.append("--use-spawn")
        # --skip-logging is implied: dramatiq_main always skips Dramatiq's plain logging set-up.
        command = [sys.executable, "-m", "eventplatform.dramatiq_main", *arguments]
        log.info(
            "worker.exec",
            processes=options["processes"],
            threads=options["threads"],
            queues=options["queues"] or "all",
            command=" ".join(command[1:4]),
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, command)
