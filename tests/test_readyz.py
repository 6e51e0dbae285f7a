"""/readyz: one AMQP connection per process per few seconds, and a database check that times out."""

from __future__ import annotations

import time

import pika
import psycopg
import pytest
from django.db import connection
from django.test import Client

from eventplatform import health


@pytest.fixture(autouse=True)
def _fresh_broker_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "_broker_check_cache", None, raising=False)


@pytest.mark.django_db
def test_many_readyz_calls_open_at_most_one_amqp_connection(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # Count real connections: the spy opens each one through pika as before.
    opened = []
    real_connection = pika.BlockingConnection

    def counting_connection(*args, **kwargs):
        opened.append(real_connection(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(pika, "BlockingConnection", counting_connection)
    statuses = [client.get("/readyz").status_code for _ in range(50)]
    assert statuses == [200] * 50
    assert len(opened) == 1, f"{len(opened)} AMQP connections for 50 probes"


@pytest.mark.django_db(transaction=True)
def test_readyz_is_503_naming_the_database_when_a_lock_blocks_it(client: Client) -> None:
    # Given another real connection holding an exclusive lock on a table the check reads (a migration)
    params = connection.get_connection_params()
    with psycopg.connect(
        host=params.get("host"),
        port=params.get("port"),
        user=params.get("user"),
        dbname=params["dbname"],
        password=params.get("password"),
    ) as blocker:
        blocker.execute("LOCK TABLE django_migrations IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        response = client.get("/readyz")
        elapsed = time.monotonic() - started
        blocker.rollback()
    # Then the probe answers within the check's timeout, naming the database
    assert response.status_code == 503
    assert response.json()["failing"] == ["database"]
    assert response.json()["details"]["database"] == "OperationalError"  # Django wraps QueryCanceled
    assert health.CHECK_TIMEOUT_SECONDS - 0.5 < elapsed < health.CHECK_TIMEOUT_SECONDS + 3
    assert client.get("/readyz").status_code == 200
