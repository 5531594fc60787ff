"""The alerts of infra/prometheus/alerts.yml, fired for real.

A real Pushgateway and a real Prometheus server (Debian's packages) scrape what the
code pushes: Prometheus runs the shipped scrape config (honor_labels) and the
shipped rules, with 1 s intervals and every rule's ``for:`` shortened to 0 s.
Then a flow run whose champion falls below its SLO makes
``CosineRetrainChampionBelowSLO`` fire, a training run with NaN steps (and a
spent budget) makes ``CosineRetrainNaNSteps`` and ``CosineRetrainCostOverBudget``
fire, and every metric that the rules and the Grafana dashboard name is in
Prometheus: the names are read from those two files, not from a list here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.support import free_port, stop_process_group
from tests.training.helpers import TINY

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "infra" / "prometheus" / "alerts.yml"
SCRAPE = ROOT / "infra" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "infra" / "grafana" / "dashboards" / "cosine-retrain.json"
PROMETHEUS = shutil.which("prometheus")
PUSHGATEWAY = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or PUSHGATEWAY is None,
    reason="Prometheus and the Pushgateway are not installed (Debian: apt-get install "
    "prometheus prometheus-pushgateway; ./run test installs them when it runs as root)",
)


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def _wait(what: str, probe: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except OSError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout:.0f} s; last: {last!r}")


def names_in(expr: str) -> set[str]:
    """Metric names an expression selects (``name{...}``)."""
    return set(SELECTOR.findall(expr))


def rules_and_dashboard_metrics() -> set[str]:
    doc = yaml.safe_load(RULES.read_text())
    exprs = [r["expr"] for g in doc["groups"] for r in g["rules"]]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    exprs += [t["expr"] for p in panels for t in p.get("targets", []) if "expr" in t]
    return {n for e in exprs for n in names_in(e)}


@pytest.fixture(scope="module")
def monitoring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    tmp = tmp_path_factory.mktemp("prometheus")
    pg_port, prom_port = free_port(), free_port()
    # the shipped rules, each `for:` shortened so that the test need not wait minutes
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = "0s"
    (tmp / "alerts.yml").write_text(yaml.safe_dump(rules))
    # the shipped scrape config, pointed at this gateway, with 1 s intervals
    config = yaml.safe_load(SCRAPE.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(tmp / "alerts.yml")]
    (gateway,) = [s for s in config["scrape_configs"] if s["job_name"] == "pushgateway"]
    assert gateway["honor_labels"] is True
    gateway["static_configs"] = [{"targets": [f"127.0.0.1:{pg_port}"]}]
    config["scrape_configs"] = [gateway]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    procs = []
    with open(tmp / "pushgateway.log", "wb") as log:
        procs.append(
            subprocess.Popen(
                [
                    str(PUSHGATEWAY),
                    f"--web.listen-address=127.0.0.1:{pg_port}",
                    # Debian's build persists to /var/lib/prometheus by default: a
                    # gateway of its own starts empty
                    f"--persistence.file={tmp / 'pushgateway.data'}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    with open(tmp / "prometheus.log", "wb") as log:
        procs.append(
            subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    urls = {"gateway": f"http://127.0.0.1:{pg_port}", "prometheus": f"http://127.0.0.1:{prom_port}"}
    try:
        _wait("the Pushgateway answers", lambda: _get(f"{urls['gateway']}/api/v1/status"))
        _wait(
            "Prometheus is ready",
            lambda: (
                urllib.request.urlopen(f"{urls['prometheus']}/-/ready", timeout=5).status == 200
            ),
        )
        groups = _get(f"{urls['prometheus']}/api/v1/rules")["data"]["groups"]
        assert {r["name"] for g in groups for r in g["rules"]} >= {
            "CosineRetrainNaNSteps",
            "CosineRetrainChampionBelowSLO",
        }
        yield urls
    finally:
        for proc in procs:
            stop_process_group(proc)


def firing(urls: dict[str, str], alert: str, **labels: str) -> list[dict[str, Any]]:
    found = _get(f"{urls['prometheus']}/api/v1/alerts")["data"]["alerts"]
    return [
        a
        for a in found
        if a["labels"]["alertname"] == alert
        and a["state"] == "firing"
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def query(urls: dict[str, str], expr: str) -> list[dict[str, Any]]:
    q = urllib.parse.quote(expr)
    return list(_get(f"{urls['prometheus']}/api/v1/query?query={q}")["data"]["result"])


@pytest.fixture(scope="module")
def below_slo(
    monitoring: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A flow run of the canary review's quality step on a champion whose live AUC is
    below its SLO (its stored predictions are noise; its labels are January's)."""
    from pipeline import flow
    from pipeline.base.config import load_config
    from pipeline.base.layout import predictions_key
    from pipeline.base.store import put_frame

    home = tmp_path_factory.mktemp("quality-home")
    config = load_config(None, home=home, pushgateway_url=monitoring["gateway"])
    env = flow.Env(config)
    features = flow.land(env, "2013-01")
    ids = pd.read_parquet(features.uri.removeprefix("file://"))["flight_id"]
    rng = np.random.default_rng(7)
    predictions = pd.DataFrame(
        {
            "flight_id": ids.astype(str),
            "score": rng.random(len(ids)),
            "model_version": "1",
            "alias": "champion",
            "scored_at": "2013-02-01T00:00:00+00:00",
        }
    )
    put_frame(env.store, predictions_key("flights", "2013-01", "champion-v1"), predictions)
    labels = flow.land(env, "2013-01", labels=True)
    outcome = flow.quality(env, labels.batch_id)
    return {"outcome": outcome, "config": config}


def test_a_champion_below_its_slo_fires_the_alert(
    monitoring: dict[str, str], below_slo: dict[str, Any]
) -> None:
    outcome = below_slo["outcome"]
    live = outcome.summary
    assert live is not None
    assert live.below_slo
    assert outcome.decision.retrain
    assert outcome.decision.trigger == "quality"
    alerts = _wait(
        "CosineRetrainChampionBelowSLO fires",
        lambda: firing(monitoring, "CosineRetrainChampionBelowSLO"),
    )
    assert float(alerts[0]["value"]) == pytest.approx(live.value, abs=1e-6)
    (slo,) = query(monitoring, "cosine_retrain_live_auc_slo")
    assert float(slo["value"][1]) == below_slo["config"].quality.slo
    (rows,) = query(monitoring, "cosine_retrain_live_rows")
    assert int(float(rows["value"][1])) == live.rows


@pytest.fixture(scope="module")
def nan_run(monitoring: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A training run with non-finite steps and a budget it spends, pushing as the job
    pushes (the gateway URL from the environment, as the pod's Secret sets it)."""
    from training import api
    from training.telemetry import pushgateway

    out = tmp_path_factory.mktemp("nan-run")
    config = api.load_config(
        None,
        [
            *TINY,
            "run_name=nan-run",
            f"output_dir={out}",
            "mlflow.enabled=false",
            "fault_injection.nan_steps=[3, 4, 40]",
            "cost.budget_usd=0.0000001",
            "checkpoint.every_steps=5",
            "eval.every_steps=5",
            f"pushgateway.url={monitoring['gateway']}",
        ],
    )
    result = api.train(config)
    assert pushgateway.flush(10.0)
    return result


def test_a_run_with_nan_steps_fires_the_nan_alert(monitoring: dict[str, str], nan_run: Any) -> None:
    assert nan_run.nan_count >= 2
    alerts = _wait(
        "CosineRetrainNaNSteps fires for the run",
        lambda: firing(monitoring, "CosineRetrainNaNSteps", run="nan-run"),
    )
    assert float(alerts[0]["value"]) == nan_run.nan_count
    assert nan_run.status == "budget_exhausted"
    _wait(
        "CosineRetrainCostOverBudget fires for the run",
        lambda: firing(monitoring, "CosineRetrainCostOverBudget", run="nan-run"),
    )


def test_every_metric_of_the_rules_and_the_dashboard_is_pushed(
    monitoring: dict[str, str], below_slo: dict[str, Any], nan_run: Any
) -> None:
    wanted = rules_and_dashboard_metrics()
    assert {"cosine_retrain_live_auc", "cosine_retrain_nan_count", "push_time_seconds"} <= wanted

    def missing() -> set[str]:
        present = set(_get(f"{monitoring['prometheus']}/api/v1/label/__name__/values")["data"])
        return wanted - present

    _wait("every metric is scraped", lambda: not missing() or None, timeout=30)
    assert missing() == set()
