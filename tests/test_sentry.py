"""Sentry is initialised with the Django and Dramatiq integrations only when SENTRY_DSN is set."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.processes import ROOT

PROBE = (
    "import django, sentry_sdk; django.setup(); client = sentry_sdk.get_client(); "
    "print(client.is_active(), sorted(getattr(client, 'integrations', {})))"
)


def probe(**env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "SENTRY_DSN"}
    environment.update(DJANGO_SETTINGS_MODULE="eventplatform.settings.base", **env)
    return subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=environment, capture_output=True, text=True,
                          check=True, timeout=60).stdout


def test_sentry_is_off_without_a_dsn() -> None:
    assert probe().startswith("False")


def test_sentry_is_on_with_django_and_dramatiq_integrations_when_a_dsn_is_set() -> None:
    out = probe(SENTRY_DSN="http://public@127.0.0.1:9/1")
    assert out.startswith("True") and "'django'" in out and "'dramatiq'" in out
