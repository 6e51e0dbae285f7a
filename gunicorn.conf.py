"""Read by `gunicorn eventplatform.wsgi` from the working directory (gunicorn's default config file).

Several gunicorn workers each count their own requests; prometheus_client's multiprocess mode
writes samples to files in PROMETHEUS_MULTIPROC_DIR that /metrics sums. The directory is made
fresh per start, in the master, before the workers import the application.
"""

import multiprocessing
import os
import tempfile

# Before prometheus_client is imported anywhere: it picks its storage mode at import.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="eventplatform-web-metrics-")

from gunicorn.glogging import Logger
from prometheus_client import multiprocess

from eventplatform.logging import log_format

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Sync workers: one per core, and one to spare for a request waiting on PostgreSQL or a slow
# client. Every idle sync worker wakes for each new connection (they share the listening socket):
# 5 workers on 2 cores cost 1.35-1.58 ms of CPU a request, 2 workers 1.05 ms, for the same rate
# (docs/performance.md). Raise WEB_CONCURRENCY when PostgreSQL is across a network.
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() + 1))
accesslog = None  # our JSON request logs come from the application


class ApplicationLogsRequests(Logger):
    """No access log: gunicorn formats one per request whenever a logging config is given, even
    with its access logger silenced (5% of a webhook's web CPU); the application logs requests."""

    def access(self, resp, req, environ, request_time):
        pass


logger_class = ApplicationLogsRequests
graceful_timeout = 10


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)


# gunicorn's own lines (start-up, worker boots and exits) as JSON too, through the project's formatter.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "structured": {
            "()": "eventplatform.logging.build_formatter",
            "log_format": log_format(),
        }
    },
    "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "structured"}},
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
    },
    "root": {"handlers": ["stdout"], "level": "INFO"},
}
