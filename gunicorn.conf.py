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

from prometheus_client import multiprocess

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Sync workers wait on PostgreSQL for part of each request: gunicorn's usual 2 x cores + 1.
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count() + 1))
accesslog = None  # our JSON request logs come from the application
graceful_timeout = 10


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)

# gunicorn's own lines (start-up, worker boots and exits) as JSON too, through the project's formatter.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"structured": {"()": "eventplatform.logging.build_formatter",
                                  "log_format": os.environ.get("LOG_FORMAT", "json")}},
    "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout",
                            "formatter": "structured"}},
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        "gunicorn.access": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
    },
    "root": {"handlers": ["stdout"], "level": "INFO"},
}
