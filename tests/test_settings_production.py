"""Safe by default (issue 10 part 1): the entry points use production settings unless another
module is chosen; production refuses to start on missing variables, with one message naming all of
them; production is HTTPS-only unless ALLOW_PLAIN_HTTP=true, BEHIND_TLS_PROXY trusts the proxy's
X-Forwarded-Proto, and `check --deploy` is clean with production settings as deployed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.processes import ROOT, production_env

REQUIRED = ("SECRET_KEY", "DATABASE_URL", "BROKER_URL", "EMAIL_URL", "ALLOWED_HOSTS")


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_manage_py_without_a_settings_module_refuses_to_start_naming_every_missing_variable() -> None:
    env = {k: v for k, v in production_env().items() if k not in REQUIRED}
    result = manage("check", env=env)
    assert result.returncode != 0
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, "one message, not a traceback"
    for name in REQUIRED:
        assert name in message
    assert "eventplatform.settings.development" in message, "it says how to choose the development defaults"


def test_one_missing_variable_is_named_alone() -> None:
    env = {k: v for k, v in production_env().items() if k != "EMAIL_URL"}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "need EMAIL_URL:" in result.stderr
    assert "SECRET_KEY" not in result.stderr


def test_the_examples_placeholder_secret_key_counts_as_missing() -> None:
    result = manage("check", env=production_env(SECRET_KEY="change-me"))
    assert result.returncode != 0
    assert "SECRET_KEY (not the example's placeholder)" in result.stderr


def test_the_public_development_secrets_key_counts_as_missing_and_a_malformed_key_is_named() -> None:
    from eventplatform.settings.base import DEVELOPMENT_WEBHOOK_SECRETS_KEY

    result = manage("check", env=production_env(WEBHOOK_SECRETS_KEY=DEVELOPMENT_WEBHOOK_SECRETS_KEY))
    assert result.returncode != 0
    assert "WEBHOOK_SECRETS_KEY (not the public development key)" in result.stderr
    result = manage("check", env=production_env(WEBHOOK_SECRETS_KEY="not-a-fernet-key"))
    assert result.returncode != 0
    assert "WEBHOOK_SECRETS_KEY: key 1 is not a Fernet key" in result.stderr
    assert "not-a-fernet-key" not in result.stderr, "a key, even a wrong one, is never printed"


def test_the_wsgi_application_refuses_too() -> None:
    env = {k: v for k, v in production_env().items() if k != "SECRET_KEY"}
    result = subprocess.run(
        [sys.executable, "-c", "import eventplatform.wsgi"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "need SECRET_KEY" in result.stderr


def test_development_settings_must_be_chosen_and_then_start_on_the_embedded_defaults(tmp_path) -> None:
    env = {k: v for k, v in production_env().items() if k not in REQUIRED}
    env.update(DJANGO_SETTINGS_MODULE="eventplatform.settings.development", DATA_DIR=str(tmp_path))
    result = manage("check", env=env)
    assert result.returncode == 0, result.stderr


TLS_WARNINGS = ("security.W004", "security.W008", "security.W012", "security.W016")


@pytest.mark.parametrize("switches", [{}, {"BEHIND_TLS_PROXY": "true"}], ids=["tls_at_gunicorn", "behind_proxy"])
def test_check_deploy_is_clean_with_production_settings(switches: dict[str, str]) -> None:
    # Given the environment a real deployment sets (production_env: the required variables), with
    # or without the proxy switch: HTTPS-only needs no switch of its own (issue 17 item 10)
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(**switches))
    output = result.stdout + result.stderr
    for check in TLS_WARNINGS:
        assert check not in output
    assert result.returncode == 0, output
    assert "no issues" in result.stdout


def test_check_deploy_warns_when_plain_http_is_allowed_by_name() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(ALLOW_PLAIN_HTTP="true"))
    assert result.returncode != 0
    for check in TLS_WARNINGS:
        assert check in result.stdout + result.stderr


HTTP_PROBE = """
import json
import eventplatform.wsgi  # the web entry point: production settings by default
from django.test import Client
client = Client()
out = {}
for name, path, headers in [("healthz", "/healthz", {}), ("login", "/admin/login/", {}),
                            ("login_https", "/admin/login/", {"HTTP_X_FORWARDED_PROTO": "https"}),
                            ("metrics", "/metrics", {}), ("webhook", "/webhooks/nobody/", {})]:
    response = client.post(path) if name == "webhook" else client.get(path, **headers)
    out[name] = {"status": response.status_code, "location": response.get("Location", ""),
                 "hsts": response.get("Strict-Transport-Security", ""),
                 "csrf_secure": bool(response.cookies["csrftoken"]["secure"]) if "csrftoken" in response.cookies
                 else None}
print(json.dumps(out))
"""


def http_probe(**env: str) -> dict[str, dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-c", HTTP_PROBE],
        cwd=ROOT,
        env=production_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.django_db
def test_plain_http_works_only_when_allowed_by_name() -> None:
    out = http_probe(ALLOW_PLAIN_HTTP="true")
    assert out["healthz"]["status"] == 200
    assert out["login"]["status"] == 200, "the admin's login page is served over plain HTTP"
    assert out["login"]["csrf_secure"] is False, "a plain-HTTP browser gets a cookie it can send back"
    assert out["login"]["hsts"] == ""


@pytest.mark.django_db
@pytest.mark.parametrize("switches", [{}, {"BEHIND_TLS_PROXY": "true"}], ids=["tls_at_gunicorn", "behind_proxy"])
def test_https_only_redirects_the_admin_and_keeps_probes_metrics_and_webhooks_reachable(switches) -> None:
    out = http_probe(**switches)
    assert out["login"]["status"] == 301 and out["login"]["location"].startswith("https://")
    if switches:  # the proxy's X-Forwarded-Proto is trusted only behind the proxy
        assert out["login_https"]["status"] == 200
        assert out["login_https"]["hsts"].startswith("max-age=31536000")
        assert out["login_https"]["csrf_secure"] is True
    else:
        assert out["login_https"]["status"] == 301, "a client's X-Forwarded-Proto is not trusted without a proxy"
    assert out["healthz"]["status"] == 200, "a kubelet probing the pod over HTTP is not redirected"
    assert out["metrics"]["status"] == 200, "neither is Prometheus"
    assert out["webhook"]["status"] == 404, "nor a webhook (a redirected POST would be lost): answered as usual"


KEY_PROBE = """
import eventplatform.wsgi
from django.conf import settings
from eventplatform.encryption import key_from_secret_key
from eventplatform.settings.base import DEVELOPMENT_WEBHOOK_SECRETS_KEY
print(settings.WEBHOOK_SECRETS_KEY == key_from_secret_key(settings.SECRET_KEY),
      settings.WEBHOOK_SECRETS_KEY != DEVELOPMENT_WEBHOOK_SECRETS_KEY)
"""


def test_without_webhook_secrets_key_production_derives_one_from_secret_key() -> None:
    # CONTRACT section 2 names SECRET_KEY as the one secret production needs: a deployment that
    # sets only it still starts, and its portal secrets are still encrypted with a key of its own.
    env = {k: v for k, v in production_env().items() if k != "WEBHOOK_SECRETS_KEY"}
    result = subprocess.run(
        [sys.executable, "-c", KEY_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


LOOPBACK_PROBE = """
import eventplatform.wsgi
from django.test import Client
response = Client(HTTP_HOST="127.0.0.1").get("/admin/login/")
print(response.status_code, response.get("Location", "-"))
"""


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("hosts", "expected"),
    [("127.0.0.1,localhost", "200 -"), ("127.0.0.1,events.example.com", "301 https://127.0.0.1/admin/login/")],
)
def test_plain_http_by_default_only_for_a_server_answering_to_loopback_names_alone(hosts: str, expected: str) -> None:
    # A trial of the production settings on one machine (an operator's first run, a check script)
    # works over http://127.0.0.1; a server that answers to any other name is HTTPS-only.
    result = subprocess.run(
        [sys.executable, "-c", LOOPBACK_PROBE],
        cwd=ROOT,
        env=production_env(ALLOWED_HOSTS=hosts),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == expected
