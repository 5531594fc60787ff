"""Prometheus rules, Prometheus config and the Grafana dashboard reference only
metric names the code pushes (training/telemetry/pushgateway.py); promtool checks and
unit-tests the rules where it is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.infra.helpers import INFRA
from training.telemetry import pushgateway

RULES = INFRA / "prometheus/alerts.yml"
DASHBOARD = INFRA / "grafana/dashboards/cosine-retrain.json"
METRIC = re.compile(r"\bcosine_retrain_[a-z_]+\b")
KNOWN = set(pushgateway.METRICS) | set(pushgateway.QUALITY_METRICS)


def rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"]}


def referenced(expr: str) -> set[str]:
    # job names share the prefix; they are label values, not metrics
    return set(METRIC.findall(expr)) - {"cosine_retrain_quality"}


def test_rules_reference_only_pushed_metrics() -> None:
    for name, rule in rules().items():
        used = referenced(rule["expr"])
        assert used, f"{name} uses no cosine_retrain metric"
        assert used <= KNOWN, f"{name} uses metrics nobody pushes: {sorted(used - KNOWN)}"
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"]
        assert rule["annotations"]["description"]


def test_nan_cost_and_failed_retrain_alerts_exist() -> None:
    r = rules()
    assert "cosine_retrain_nan_count" in referenced(r["CosineRetrainNaNSteps"]["expr"])
    cost = referenced(r["CosineRetrainCostOverBudget"]["expr"])
    assert cost == {"cosine_retrain_cost_usd", "cosine_retrain_budget_usd"}
    failed = r["CosineRetrainFailed"]
    assert {"cosine_retrain_step", "cosine_retrain_total_steps"} <= referenced(failed["expr"])
    assert "push_time_seconds" in failed["expr"]
    assert failed["labels"]["severity"] == "critical"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    check = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        ["promtool", "test", "rules", "alerts.test.yml"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=RULES.parent,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr


def test_prometheus_scrapes_the_pushgateway_keeping_pushed_labels() -> None:
    config = yaml.safe_load((INFRA / "prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "pushgateway"]
    assert job["honor_labels"] is True
    assert job["static_configs"][0]["targets"] == ["pushgateway:9091"]


def dashboard_targets() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def test_dashboard_queries_reference_pushed_metrics_and_the_provisioned_datasource() -> None:
    dash = json.loads(DASHBOARD.read_text())
    provisioned = yaml.safe_load(
        (INFRA / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]["uid"]
    used: set[str] = set()
    for title, expr in dashboard_targets():
        names = referenced(expr)
        assert names, f"panel {title!r} queries no cosine_retrain metric"
        assert names <= KNOWN, f"panel {title!r}: unknown metrics {sorted(names - KNOWN)}"
        used |= names
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == provisioned
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == provisioned
    variable = dash["templating"]["list"][0]
    assert referenced(variable["definition"]) <= KNOWN
    # lr, losses, cost and the champion's live quality
    assert used >= {
        "cosine_retrain_lr",
        "cosine_retrain_train_loss",
        "cosine_retrain_val_loss",
        "cosine_retrain_cost_usd",
        "cosine_retrain_live_auc",
    }
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    provider = yaml.safe_load(
        (INFRA / "grafana/provisioning/dashboards/cosine-retrain.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/etc/grafana/dashboards"
