"""The names of the actor that applies an accepted webhook event, written once.

registrations/tasks.py declares `webhook_event_apply` with them, the intake (services.py) writes
its outbox rows with them, and the benchmark fills the queue with them. Nothing else here: the
bench's harness reads it without loading Django.
"""

from __future__ import annotations

APPLY_ACTOR = {"actor_name": "webhook_event_apply", "queue_name": "registrations"}
