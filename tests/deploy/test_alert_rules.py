"""The monitoring configuration in deploy/ is code too: the alert rules must load and behave as their
unit tests say, and the dashboard and rules may only name metrics the processes really export.

A renamed metric in eventplatform/metrics.py would otherwise leave an alert that never fires and a
dashboard panel that shows "No data" — both silently. No database is needed here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from eventplatform import metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "eventplatform.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"

# Published by the relay's RabbitMQ collector (passive queue_declare), not by eventplatform/metrics.py.
RABBITMQ_EXPORTER_METRICS = {"eventplatform_rabbitmq_queue_messages", "eventplatform_rabbitmq_queue_consumers"}

METRIC_NAME = re.compile(r"eventplatform_[a-z0-9_]+")

# Series names a collector exposes, by type (prometheus_client strips `_total` from a Counter's name).
SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promtool")
    if executable is None:
        pytest.fail("promtool is not installed: run `bash deploy/install-tools.sh` (as root) first", pytrace=False)
    return subprocess.run([executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def assert_succeeded(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"{' '.join(result.args)} exited {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


def defined_collectors() -> list[MetricWrapperBase]:
    return [value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)]


def exported_series_names() -> set[str]:
    """Every series name the processes can expose: our collectors' plus the RabbitMQ exporter's."""
    names = set(RABBITMQ_EXPORTER_METRICS)
    for collector in defined_collectors():
        for family in collector.describe():
            names.update(family.name + suffix for suffix in SERIES_SUFFIXES[family.type])
    return names


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())

    def walk(panels: list[dict]) -> list[str]:
        found: list[str] = []
        for panel in panels:
            found += [target["expr"] for target in panel.get("targets", []) if target.get("expr")]
            found += walk(panel.get("panels", []))
        return found

    return walk(dashboard["panels"])


def metric_names_in(text: str) -> set[str]:
    return set(METRIC_NAME.findall(text))


def alert_names() -> list[str]:
    return re.findall(r"^\s*-\s*alert:\s*(\w+)\s*$", ALERTS.read_text(), flags=re.MULTILINE)


# --- promtool -----------------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check() -> None:
    assert_succeeded(promtool("check", "rules", str(ALERTS.relative_to(ROOT))))


def test_alert_rules_pass_their_unit_tests() -> None:
    assert_succeeded(promtool("test", "rules", str(ALERTS_TEST.relative_to(ROOT))))


def test_prometheus_config_is_valid() -> None:
    assert_succeeded(promtool("check", "config", str(PROMETHEUS_CONFIG.relative_to(ROOT))))


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables given plausible values, must parse as PromQL.

    promtool has no "parse this expression" command, so the queries become recording rules of a
    throw-away rule file (JSON is YAML) that `promtool check rules` parses.
    """
    grafana_variables = {"$__rate_interval": "1m", "$__range": "6h", "$__interval": "15s"}
    rules = []
    for index, expression in enumerate(dashboard_expressions()):
        for variable, value in grafana_variables.items():
            expression = expression.replace(variable, value)
        rules.append({"record": f"dashboard:panel_query_{index}", "expr": expression})
    assert rules, "the dashboard has no queries"
    rule_file = tmp_path / "dashboard_rules.yml"
    rule_file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert_succeeded(promtool("check", "rules", str(rule_file)))


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    """The unit tests must show each alert firing at least once and staying quiet at least once."""
    firing: set[str] = set()
    quiet: set[str] = set()
    lines = [line.strip() for line in ALERTS_TEST.read_text().splitlines()]
    for number, line in enumerate(lines):
        match = re.fullmatch(r"alertname:\s*(\w+)", line)
        if not match:
            continue
        expectation = next(following for following in lines[number + 1 :] if following.startswith("exp_alerts:"))
        (quiet if expectation.replace(" ", "") == "exp_alerts:[]" else firing).add(match.group(1))
    alerts = set(alert_names())
    assert len(alerts) == len(alert_names()), "duplicate alert names in alerts.yml"
    assert alerts >= {
        "OutboxLagHigh",
        "DeadLettersRising",
        "DeliverySuccessRateLow",
        "QueueDepthGrowing",
        "CircuitBreakerOpen",
        "RelayDown",
        "WorkersDown",
        "WebDown",
        "EmailBounceRateHigh",
        "EmailComplaintRateHigh",
    }
    assert not alerts - firing, f"alerts never shown firing in alerts_test.yml: {sorted(alerts - firing)}"
    assert not alerts - quiet, f"alerts never shown quiet in alerts_test.yml: {sorted(alerts - quiet)}"


# --- metric names -------------------------------------------------------------------------------------


def test_metrics_module_defines_collectors() -> None:
    # Guards the name check below against passing vacuously (e.g. if the module stopped using
    # prometheus_client's classes).
    assert {
        "eventplatform_webhook_requests_total",
        "eventplatform_outbox_lag_seconds",
        "eventplatform_notification_end_to_end_seconds_bucket",
    } <= exported_series_names()


def test_dashboard_uses_only_exported_metrics() -> None:
    used = set().union(*(metric_names_in(expression) for expression in dashboard_expressions()))
    assert used, "no eventplatform_* metric found in the dashboard"
    unknown = used - exported_series_names()
    assert not unknown, f"dashboard queries name metrics nobody exports: {sorted(unknown)}"


def test_alert_rules_use_only_exported_metrics() -> None:
    # The whole file, annotations included: a runbook must not send anyone to a metric that does not exist.
    used = metric_names_in(ALERTS.read_text())
    assert used, "no eventplatform_* metric found in alerts.yml"
    unknown = used - exported_series_names()
    assert not unknown, f"alerts.yml names metrics nobody exports: {sorted(unknown)}"


def test_dashboard_selects_its_datasource_through_a_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]


def test_every_metric_is_documented() -> None:
    documented = metric_names_in(METRICS_DOC.read_text())
    # Documented under the name one types into Prometheus: a Counter with its `_total`.
    expected = {
        family.name + ("_total" if family.type == "counter" else "")
        for collector in defined_collectors()
        for family in collector.describe()
    }
    missing = (expected | RABBITMQ_EXPORTER_METRICS) - documented
    assert not missing, f"docs/metrics.md does not describe: {sorted(missing)}"
