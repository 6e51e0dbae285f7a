"""Every registered actor's retry delays stay under RabbitMQ's consumer_timeout (30 minutes by
default): Dramatiq keeps a delayed retry unacknowledged in the worker until it is due, and RabbitMQ
closes a channel holding one longer than that (dramatiq issue 827). Longer waits go through the outbox."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.middleware import Retries

from apps.notifications import actor_names, tasks
from eventplatform.actors import actor_modules_import

CONSUMER_TIMEOUT_MS = 30 * 60 * 1000


def registered_actors() -> dict[str, dramatiq.Actor]:
    """Import every app's tasks module, as rundramatiq does, and return what the broker knows."""
    actor_modules_import()
    broker = dramatiq.get_broker()
    return {name: broker.get_actor(name) for name in broker.get_declared_actors()}


def test_every_actors_max_backoff_is_under_the_consumer_timeout() -> None:
    actors = registered_actors()
    assert {
        "webhook_event_apply",
        actor_names.SEND_ACTOR,
        actor_names.DEAD_LETTER_ACTOR,
        actor_names.PROBE_ACTOR,
    } <= set(actors)
    retries = next(m for m in dramatiq.get_broker().middleware if isinstance(m, Retries))
    too_long = {
        name: actor.options.get("max_backoff", retries.max_backoff)
        for name, actor in actors.items()
        if actor.options.get("max_backoff", retries.max_backoff) >= CONSUMER_TIMEOUT_MS
    }
    assert too_long == {}, f"actors whose retries may wait past RabbitMQ's consumer_timeout: {too_long}"


@pytest.mark.parametrize("max_backoff_setting", [300_000, 10 * 24 * 3600 * 1000])
def test_the_send_actors_computed_delay_stays_capped_whatever_the_settings(settings, max_backoff_setting: int) -> None:
    settings.NOTIFICATION_MAX_BACKOFF_MS = max_backoff_setting
    assert max(tasks.retry_backoff_ms(retries) for retries in range(0, 40)) < CONSUMER_TIMEOUT_MS


def test_actor_and_queue_names_are_the_ones_the_outbox_rows_use() -> None:
    assert (tasks.notification_send_actor.actor_name, tasks.notification_send_actor.queue_name) == (
        actor_names.SEND_ACTOR,
        actor_names.QUEUE_NAME,
    )
    assert tasks.notification_dead_letter.actor_name == actor_names.DEAD_LETTER_ACTOR
    assert tasks.notification_probe.actor_name == actor_names.PROBE_ACTOR
    assert tasks.notification_send_actor.options["on_retry_exhausted"] == actor_names.DEAD_LETTER_ACTOR
