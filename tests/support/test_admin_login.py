"""Admin login throttled and passwords checked (issue 17 item 10): django-axes locks a username at
one address out after AXES_FAILURE_LIMIT failures (429, even with the right password then), other
addresses are not affected, a success before the limit resets the count; Django's four standard
password validators are on."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client

LOGIN = "/admin/login/?next=/admin/"
PASSWORD = "a-long-and-uncommon-passphrase-7"


def login(client: Client, password: str, address: str = "203.0.113.7"):
    return client.post(LOGIN, {"username": "boss", "password": password}, REMOTE_ADDR=address)


@pytest.fixture
def boss(db) -> User:
    return User.objects.create_superuser("boss", "boss@example.org", PASSWORD)


def test_after_the_failure_limit_the_username_at_that_address_is_locked_out(boss: User) -> None:
    client = Client()
    # Given AXES_FAILURE_LIMIT wrong passwords for one username from one address
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "wrong").status_code == 200  # the form again, with its error
    assert login(client, "wrong").status_code == 429
    # Then even the right password from there is refused, and no session is opened
    response = login(client, PASSWORD)
    assert response.status_code == 429
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302, "still sent to the login page"
    # but the same user from another address logs in (a guesser cannot lock staff out from elsewhere)
    other = Client()
    assert login(other, PASSWORD, address="198.51.100.9").status_code == 302
    assert other.get("/admin/").status_code == 200


def test_a_success_before_the_limit_resets_the_count(boss: User) -> None:
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        login(client, "wrong")
    assert login(client, PASSWORD).status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert login(client, "wrong").status_code == 200
    assert login(client, PASSWORD).status_code == 302


@pytest.mark.parametrize(
    ("password", "complaint"),
    [
        ("password1234", "too common"),
        ("83719260431857", "entirely numeric"),
        ("short7!", "too short"),
        ("boss@example.org!", "too similar"),
    ],
)
def test_the_four_standard_password_validators(boss: User, password: str, complaint: str) -> None:
    with pytest.raises(ValidationError) as refused:
        validate_password(password, user=boss)
    assert complaint in " ".join(refused.value.messages)
    validate_password(PASSWORD, user=boss)
