"""Loaded with `-p` before Django starts: gives this test run its own RabbitMQ vhost and its own
database name, so runs never see each other's messages or rows on the shared services.

The vhost is deleted when the run ends; pytest-django creates and drops the test database.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

RUN_ID = f"ep_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
VHOST = RUN_ID


def rabbitmqctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120, check=check)


def pytest_configure(config: object) -> None:
    # RabbitMQ may be mid-restart (a previous suite's outage test): wait for it rather than fail.
    for _ in range(60):
        if rabbitmqctl("add_vhost", VHOST, check=False).returncode == 0:
            break
        time.sleep(1)
    rabbitmqctl("set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*")


def pytest_unconfigure(config: object) -> None:
    rabbitmqctl("delete_vhost", VHOST, check=False)


os.environ["BROKER_URL"] = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
os.environ.setdefault("DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{RUN_ID}")
os.environ.setdefault("EMAIL_URL", "memorymail://")
os.environ.setdefault("LOG_LEVEL", "WARNING")
