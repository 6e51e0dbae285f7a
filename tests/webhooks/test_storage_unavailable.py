"""Storage unavailable answers CONTRACT section 4's 503 `database_unavailable`, never a 500 page
(issue 17 item 3): a real read-only PostgreSQL, and a table of the SQLSTATEs PostgreSQL really raises."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client

from apps.outbox.models import OutboxMessage
from apps.webhooks.models import Portal, WebhookEvent
from eventplatform.database import storage_unavailable
from tests.support.webhooks import encode, payload, signed_headers

URL = "/webhooks/pretix/"


def _post(client: Client, delivery_id: str):
    body = encode(payload(registration_id=delivery_id))
    headers = signed_headers(body, delivery_id=delivery_id)
    return client.post(
        URL,
        data=body,
        content_type="application/json",
        headers={k: v for k, v in headers.items() if k != "content-type"},
    )


@pytest.mark.django_db(transaction=True)
def test_read_only_database_answers_503_json_for_every_delivery(client: Client, portal: Portal) -> None:
    # Given: the database turned read-only, as a standby after a failover is (every new session)
    name = connection.settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    connection.close()
    try:
        # When: twenty portals deliver
        responses = [_post(client, f"ro-{number}") for number in range(20)]
    finally:
        connection.close()
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
            cursor.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        connection.close()
    # Then: each got the JSON 503 that makes it deliver again; nothing was stored
    for response in responses:
        assert response.status_code == 503, response.content[:200]
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "database_unavailable"
        assert response["Retry-After"] == "5"
    assert WebhookEvent.objects.count() == 0 and OutboxMessage.objects.count() == 0
    # And once writable again, the same delivery is stored
    assert _post(client, "ro-0").status_code == 202


@pytest.mark.django_db(transaction=True)
def test_read_only_session_answers_503(client: Client, portal: Portal) -> None:
    # The session (not the database) read-only: `SET SESSION CHARACTERISTICS`, the state of a
    # connection a pooler kept from a standby.
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    try:
        response = _post(client, "ro-session")
    finally:
        if connection.connection is not None:
            with connection.cursor() as cursor:
                cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE")
    assert response.status_code == 503 and response.json()["error"]["code"] == "database_unavailable"
    assert not WebhookEvent.objects.exists()


# (SQLSTATE, storage unavailable?): raised by PostgreSQL itself, so psycopg and Django pick the
# exception class they really pick.
SQLSTATES = [
    ("25006", True),  # read_only_sql_transaction: InternalError
    ("25P03", True),  # idle_in_transaction_session_timeout: InternalError
    ("53100", True),  # disk_full
    ("53200", True),  # out_of_memory
    ("53300", True),  # too_many_connections
    ("57P01", True),  # admin_shutdown
    ("57P03", True),  # cannot_connect_now
    ("08006", True),  # connection_failure
    ("58030", True),  # io_error
    ("55P03", True),  # lock_not_available (lock_timeout)
    ("57014", True),  # query_canceled (statement_timeout)
    ("40001", True),  # serialization_failure
    ("XX000", False),  # internal_error: a bug, stays a 500
    ("23505", False),  # unique_violation
    ("22001", False),  # string_data_right_truncation
    ("P0001", False),  # raise_exception from a trigger
]


@pytest.mark.django_db
@pytest.mark.parametrize(("code", "unavailable"), SQLSTATES)
def test_storage_unavailable_by_sqlstate(code: str, unavailable: bool) -> None:
    with pytest.raises(DatabaseError) as raised, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"DO $$ BEGIN RAISE EXCEPTION 'test' USING ERRCODE = '{code}'; END $$")
    assert storage_unavailable(raised.value) is unavailable
