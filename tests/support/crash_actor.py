"""A test-only actor that kills its worker process, as a segfault or the OOM killer would.

Loaded into a real worker by tests/outbox/test_poison_messages.py; each run appends a line to
`path` first, so the test counts how many times it really ran.
"""

from __future__ import annotations

import os

import dramatiq

from eventplatform.broker import MAX_BACKOFF_MS

QUEUE = "poison_test"


# Declared like every actor (tests/notifications/test_actors.py): its backoff under the consumer timeout.
@dramatiq.actor(queue_name=QUEUE, max_retries=0, max_backoff=MAX_BACKOFF_MS)
def crash_worker_process(path: str) -> None:
    with open(path, "a") as runs:
        runs.write("ran\n")
    os._exit(1)
