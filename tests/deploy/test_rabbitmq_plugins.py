"""deploy/ensure-services.sh leaves RabbitMQ as operators expect (issue 10 part 3): the management UI
and API on 15672 and RabbitMQ's own Prometheus metrics on 15692, which the dashboard reads."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "eventplatform.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

pytestmark = pytest.mark.slow


def get(url: str, *, auth: tuple[str, str] | None = None) -> str:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        return response.read().decode()


@pytest.fixture(scope="module")
def ensured() -> str:
    # Idempotent: run on a machine where the plugins are already on, it changes nothing.
    result = subprocess.run(
        ["bash", "deploy/ensure-services.sh"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_ensure_services_enables_the_management_and_prometheus_plugins(ensured: str) -> None:
    enabled = subprocess.run(
        ["rabbitmq-plugins", "-q", "list", "-E", "-m"], capture_output=True, text=True, timeout=120, check=True
    ).stdout.split()
    assert {"rabbitmq_management", "rabbitmq_prometheus"} <= set(enabled)


def test_the_management_api_answers(ensured: str) -> None:
    overview = json.loads(get("http://127.0.0.1:15672/api/overview", auth=("guest", "guest")))
    assert overview["management_version"]
    assert "<title>RabbitMQ Management</title>" in get("http://127.0.0.1:15672/")


def test_rabbitmqs_own_metrics_include_everything_the_dashboard_and_alerts_read(ensured: str) -> None:
    exported = set(re.findall(r"^(rabbitmq_[a-z_]+)", get("http://127.0.0.1:15692/metrics"), re.MULTILINE))
    assert {
        "rabbitmq_connections",
        "rabbitmq_queue_messages_ready",
        "rabbitmq_global_messages_received_total",
    } <= exported
    dashboard_names = set(re.findall(r"rabbitmq_[a-z_]+", DASHBOARD.read_text())) - {"rabbitmq_prometheus"}
    assert len(dashboard_names) >= 8, "the dashboard shows RabbitMQ's own metrics"
    alert_names = set(re.findall(r"rabbitmq_alarms_[a-z_]+", ALERTS.read_text()))
    assert len(alert_names) == 3
    unknown = (dashboard_names | alert_names) - exported
    assert not unknown, f"the dashboard or alerts name metrics RabbitMQ does not export: {sorted(unknown)}"


def test_prometheus_scrapes_rabbitmqs_own_metrics() -> None:
    config = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    job = config.split("- job_name: rabbitmq", 1)[1]
    assert '"127.0.0.1:15692"' in job.split("- job_name:", 1)[0]
