"""CONTRACT section 2: the variables of the table, listed in `.env.example` and read by the settings
with the stated defaults, checked in a fresh process with the environment an operator gives it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.support.processes import PRODUCTION_SECRET_KEY, ROOT

# The table's variables that are present; EMAIL_BOUNCE_ADDRESS and BOUNCE_RECEIVER_BIND come with the
# bounce receiver (issue 19) and are checked there.
TABLE = [
    "DATABASE_URL",
    "BROKER_URL",
    "EMAIL_URL",
    "SMS_API_URL",
    "SMS_ACCOUNT_SID",
    "SMS_AUTH_TOKEN",
    "SMS_FROM",
    "SECRET_KEY",
    "DEBUG",
    "ALLOWED_HOSTS",
    "WEBHOOK_TOLERANCE_SECONDS",
    "WEBHOOK_MAX_BODY_BYTES",
    "LOG_FORMAT",
    "EMAIL_BOUNCE_ADDRESS",
    "BOUNCE_RECEIVER_BIND",
    "EMAIL_SENDER_DOMAINS",
    "PUBLIC_BASE_URL",
]


def test_every_variable_of_the_table_is_in_env_example() -> None:
    listed = set(re.findall(r"^#?\s?([A-Za-z_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE))
    assert set(TABLE) - listed == set()


def read_settings(*names: str, **environ: str) -> dict[str, object]:
    """The settings' values in a new process with production settings (what operators run) whose
    environment has none of the table's variables but those production requires and `environ`."""
    env = {key: value for key, value in os.environ.items() if key not in TABLE and key != "DEFAULT_FROM_EMAIL"}
    env.update(
        DJANGO_SETTINGS_MODULE="eventplatform.settings.production",
        SECRET_KEY=PRODUCTION_SECRET_KEY,
        DATABASE_URL="postgres://postgres@127.0.0.1:5432/unused",
        BROKER_URL="amqp://guest:guest@127.0.0.1:5672/%2F",
        EMAIL_URL="smtp://127.0.0.1:2525",
        ALLOWED_HOSTS="127.0.0.1",
        **environ,
    )
    code = (
        "import json, django; django.setup(); from django.conf import settings; "
        f"print(json.dumps({{name: getattr(settings, name) for name in {list(names)!r}}}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif((ROOT / ".env").exists(), reason="a .env in the checkout sets variables of its own")
def test_defaults_of_the_table() -> None:
    values = read_settings(
        "WEBHOOK_TOLERANCE_SECONDS",
        "WEBHOOK_MAX_BODY_BYTES",
        "LOG_FORMAT",
        "EMAIL_BOUNCE_ADDRESS",
        "BOUNCE_RECEIVER_BIND",
        "EMAIL_SENDER_DOMAINS",
        "PUBLIC_BASE_URL",
    )
    assert values == {
        "WEBHOOK_TOLERANCE_SECONDS": 300,
        "WEBHOOK_MAX_BODY_BYTES": 262144,
        "LOG_FORMAT": "json",
        "EMAIL_BOUNCE_ADDRESS": "",
        "BOUNCE_RECEIVER_BIND": "127.0.0.1:2526",
        "EMAIL_SENDER_DOMAINS": ["eventplatform.local"],
        "PUBLIC_BASE_URL": "",
    }


@pytest.mark.skipif((ROOT / ".env").exists(), reason="a .env in the checkout sets variables of its own")
@pytest.mark.parametrize("given", ["", " "])
def test_sender_domains_left_empty_as_in_env_example_default_to_the_from_domain(given: str) -> None:
    """`.env.example` has `EMAIL_SENDER_DOMAINS=`; copied to `.env` it must not refuse every sender."""
    values = read_settings(
        "EMAIL_SENDER_DOMAINS", EMAIL_SENDER_DOMAINS=given, DEFAULT_FROM_EMAIL="Conf <hello@Conf.Example.com>"
    )
    assert values == {"EMAIL_SENDER_DOMAINS": ["conf.example.com"]}


@pytest.mark.skipif((ROOT / ".env").exists(), reason="a .env in the checkout sets variables of its own")
def test_public_base_url_with_a_trailing_slash_is_the_same_base() -> None:
    values = read_settings("PUBLIC_BASE_URL", PUBLIC_BASE_URL="https://events.example.com/")
    assert values == {"PUBLIC_BASE_URL": "https://events.example.com"}
