"""A message that kills its worker process is dead-lettered after BROKER_MAX_DELIVERIES, not looped forever."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import dramatiq
import pika
import pytest
from django.conf import settings

from apps.outbox.models import MessageRedelivery
from tests.support import crash_actor
from tests.support.processes import ManagedProcess, process_env, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(400)]

WORKER_STARTS = 10  # more than the limit: without the guard the message would run every time


def dead_lettered() -> list[str]:
    connection = pika.BlockingConnection(pika.URLParameters(os.environ["BROKER_URL"]))
    try:
        channel = connection.channel()
        ids = []
        while (got := channel.basic_get(f"{crash_actor.QUEUE}.XQ", auto_ack=False))[0] is not None:
            ids.append(dramatiq.Message.decode(got[2]).message_id)
        return ids  # not acked: closing the connection puts them back
    finally:
        connection.close()


def test_a_message_killing_its_worker_runs_at_most_the_limit_and_is_dead_lettered(tmp_path: Path) -> None:
    assert settings.BROKER_MAX_DELIVERIES == 5
    runs = tmp_path / "runs.txt"
    message = crash_actor.crash_worker_process.send(path=str(runs))
    env = process_env()
    outputs = []
    # A supervisor restarts the worker each time the message kills it (Dramatiq's main process
    # stops when one of its worker processes dies).
    for _ in range(WORKER_STARTS):
        worker = ManagedProcess(
            "worker",
            [
                sys.executable,
                "-m",
                "eventplatform.dramatiq_main",
                "django_dramatiq.setup",
                "tests.support.crash_actor",
                "--processes",
                "1",
                "--threads",
                "1",
                "--queues",
                crash_actor.QUEUE,
            ],
            env,
        )
        try:
            wait_until(lambda w=worker: not w.alive() or dead_lettered(), timeout=60, what="a crash or a dead letter")
            time.sleep(0.5)
            survived = worker.alive()
        finally:
            worker.stop()
            outputs.append(worker.output())
        if survived:
            break
    assert runs.read_text().count("ran") == settings.BROKER_MAX_DELIVERIES
    assert dead_lettered() == [message.message_id]
    row = MessageRedelivery.objects.get(message_id=message.message_id)
    assert row.rejected_at is not None and row.redeliveries == settings.BROKER_MAX_DELIVERIES
    assert row.actor_name == "crash_worker_process" and row.queue_name == crash_actor.QUEUE
    assert '"error_code":"poison_message"' in outputs[-1].replace(" ", "")
