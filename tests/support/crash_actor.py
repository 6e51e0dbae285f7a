"""A test-only actor that kills its worker process, as a segfault or the OOM killer would.

Loaded into a real worker by tests/outbox/test_poison_messages.py; each run appends a line to
`path` first, so the test counts how many times it really ran.
"""

from __future__ import annotations

import os

import dramatiq

QUEUE = "poison_test"


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def crash_worker_process(path: str) -> None:
    with open(path, "a") as runs:
        runs.write("ran\n")
    os._exit(1)
