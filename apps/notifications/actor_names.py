"""The notifications queue's and actors' names, written once.

queueing.py writes outbox rows with them, tasks.py declares its actors with them
(tests/notifications/test_actors.py checks), and the benchmark drains and watches the queue by
them. Nothing else here: the bench's harness reads it without loading Django.
"""

from __future__ import annotations

QUEUE_NAME = "notifications"
SEND_ACTOR = "notification_send"
DEAD_LETTER_ACTOR = "notification_dead_letter"
PROBE_ACTOR = "notification_probe"
