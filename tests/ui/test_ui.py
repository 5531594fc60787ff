"""What users see, in a real browser (Debian Chromium driven by Playwright).

A replayed quarter (small training config) is served by the real stack of
``./run ui``: Airflow's api-server, scheduler, dag-processor and triggerer, and
an MLflow server. A ``retrain`` run is triggered through the REST API and run by
the scheduler; then the browser checks the DAG list, the run's graph, the extra
link to MLflow, the lr chart with its restarts and the model's aliases.
Screenshots go to ``test-artifacts/ui/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import live_stack

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "ui"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium; ./run test installs "
    "it when it runs as root)",
)


def _api(stack: Any, method: str, path: str, body: Any = None) -> Any:
    """One REST call as the stack's user (:meth:`pipeline.apps.ui.Stack.api` logs in)."""
    return stack.api(method, path, body)


@pytest.fixture(scope="module")
def stack(replayed: tuple[Path, str]) -> Iterator[Any]:
    home, _ = replayed
    # March's labels arrive: a window (January-March) no run has trained yet
    land = subprocess.run(
        [sys.executable, "-m", "pipeline", "ingest-labels", "2013-03"],
        cwd=ROOT,
        env={**os.environ, "COSINE_RETRAIN_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    assert land.returncode == 0, land.stderr
    with live_stack(home) as running:
        yield running


@pytest.fixture(scope="module")
def token(stack: Any) -> str:
    body = {"username": stack.user, "password": stack.password}
    return str(_api(stack, "POST", "/auth/token", body)["access_token"])


@pytest.fixture(scope="module")
def retrain_run(stack: Any, token: str) -> dict[str, Any]:
    """A retrain triggered like the UI's form does, run to the end by the scheduler."""
    _api(stack, "PATCH", "/api/v2/dags/retrain", {"is_paused": False})
    conf = {"trigger": "manual", "reason": "UI test: retrain on January to March"}
    run = stack.trigger("retrain", conf)
    run_id = urllib.parse.quote(run["dag_run_id"], safe="")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        state = _api(stack, "GET", f"/api/v2/dags/retrain/dagRuns/{run_id}")["state"]
        if state in ("success", "failed"):
            break
        time.sleep(3)
    states = _states(stack, token, run_id)
    assert state == "success", f"retrain ended {state}: {states}; logs in {stack.home}/airflow/logs"
    if states.get("train") == "success":
        return {"run_id": run["dag_run_id"], "quoted": run_id, "states": states}
    # The demo's last retrain_request events, recorded by dag.test(), make the
    # scheduler start a retrain as soon as it runs; that run (one at a time) trained
    # the window first, and ours coalesced into it: that is the run to look at.
    assert states.get("skip") == "success", states
    runs = _api(stack, "GET", "/api/v2/dags/retrain/dagRuns?limit=50")["dag_runs"]
    # the newest first: older ones are the demo's own (dag.test) runs in the same database
    for other in sorted(runs, key=lambda r: r["start_date"] or "", reverse=True):
        quoted = urllib.parse.quote(other["dag_run_id"], safe="")
        theirs = _states(stack, token, quoted)
        if theirs.get("train") == "success":
            assert other["state"] == "success", theirs
            return {"run_id": other["dag_run_id"], "quoted": quoted, "states": theirs}
    raise AssertionError(f"no retrain run trained the window: {[r['dag_run_id'] for r in runs]}")


def _states(stack: Any, token: str, quoted_run_id: str) -> dict[str, str]:
    path = f"/api/v2/dags/retrain/dagRuns/{quoted_run_id}/taskInstances"
    return {t["task_id"]: t["state"] for t in _api(stack, "GET", path)["task_instances"]}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        try:
            yield b
        finally:
            b.close()


def _page(browser: Any, stack: Any, token: str) -> Any:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.add_cookies([{"name": "_token", "value": token, "url": stack.airflow_url}])
    page = context.new_page()
    page.set_default_timeout(60_000)
    return page


def test_airflow_lists_the_dags_without_import_errors(stack: Any, token: str, browser: Any) -> None:
    assert _api(stack, "GET", "/api/v2/importErrors")["total_entries"] == 0
    page = _page(browser, stack, token)
    page.goto(f"{stack.airflow_url}/dags")
    for dag_id in ("canary_review", "drift_monitor", "ingest", "retrain"):
        page.get_by_role("link", name=dag_id).first.wait_for()
    assert page.get_by_text("Import Errors").count() == 0 or "0" in page.content()
    page.screenshot(path=str(SHOTS / "airflow-dags.png"), full_page=True)
    page.context.close()


def test_a_triggered_retrain_is_all_green_in_the_graph(
    stack: Any, token: str, browser: Any, retrain_run: dict[str, Any]
) -> None:
    states = retrain_run["states"]
    assert states["skip"] == "skipped"  # the branch trained, so the skip path did not run
    assert all(s == "success" for t, s in states.items() if t != "skip"), states
    page = _page(browser, stack, token)
    page.goto(f"{stack.airflow_url}/dags/retrain/runs/{retrain_run['quoted']}")
    page.get_by_role("button", name="Show Graph").click()
    page.locator(".react-flow__node").first.wait_for()
    page.wait_for_timeout(2000)
    nodes = page.locator(".react-flow__node")
    assert nodes.count() >= 7  # plan, branch, skip, export_window, train, register, gate
    page.screenshot(path=str(SHOTS / "airflow-retrain-graph.png"), full_page=True)
    page.context.close()


def test_the_training_task_links_to_its_mlflow_run(
    stack: Any, token: str, browser: Any, retrain_run: dict[str, Any]
) -> None:
    path = f"/api/v2/dags/retrain/dagRuns/{retrain_run['quoted']}/taskInstances/train/links"
    links = _api(stack, "GET", path)["extra_links"]
    url = links.get("MLflow run")
    assert url, links
    assert url.startswith(f"{stack.mlflow_url}/#/experiments/"), links
    page = _page(browser, stack, token)
    # Airflow 3 shows a task's extra links on its Details tab
    page.goto(f"{stack.airflow_url}/dags/retrain/runs/{retrain_run['quoted']}/tasks/train/details")
    link = page.get_by_role("link", name="MLflow run")
    link.wait_for()
    assert link.get_attribute("href") == url
    with page.context.expect_page() as opened:
        link.click()
    mlflow_page = opened.value
    mlflow_page.set_default_timeout(60_000)
    mlflow_page.get_by_text("retrain-2013-03-").first.wait_for()
    mlflow_page.wait_for_timeout(2000)
    mlflow_page.screenshot(path=str(SHOTS / "mlflow-run-from-airflow-link.png"))
    page.context.close()


def test_mlflow_shows_the_lr_chart_with_its_restarts(
    stack: Any, browser: Any, retrain_run: dict[str, Any]
) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(stack.mlflow_url)
    experiment = client.get_experiment_by_name("flight_delay")
    run = client.search_runs(
        [experiment.experiment_id], "attributes.run_name LIKE 'retrain-2013-03-%'"
    )[0]
    lr = [
        m.value
        for m in sorted(client.get_metric_history(run.info.run_id, "lr"), key=lambda m: m.step)
    ]
    # a jump of 5x or more from a nonzero rate (the warmup starts at 0: not a restart)
    restarts = [i for i in range(1, len(lr)) if lr[i - 1] > 0 and lr[i] > lr[i - 1] * 5]
    assert len(restarts) == 2, "three cycles: two warm restarts in the logged lr"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(
        f"{stack.mlflow_url}/#/experiments/{experiment.experiment_id}/runs/"
        f"{run.info.run_id}/model-metrics"
    )
    page.locator(".js-plotly-plot").first.wait_for(state="visible")
    page.get_by_text("lr", exact=True).first.wait_for()
    with_close = page.get_by_role("button", name="Close")
    if with_close.count():
        with_close.first.click()
    page.wait_for_timeout(3000)
    assert page.get_by_text("Error while loading").count() == 0
    page.screenshot(path=str(SHOTS / "mlflow-lr-chart.png"), full_page=True)
    page.close()


def test_mlflow_shows_the_model_with_champion_and_canary(
    stack: Any, browser: Any, retrain_run: dict[str, Any]
) -> None:
    from mlflow import MlflowClient

    aliases = MlflowClient(stack.mlflow_url).get_registered_model("flight_delay").aliases
    assert {"champion", "canary"} <= set(aliases), aliases
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(f"{stack.mlflow_url}/#/models/flight_delay")
    page.get_by_text("champion").first.wait_for()
    page.get_by_text("canary").first.wait_for()
    page.wait_for_timeout(2000)
    page.screenshot(path=str(SHOTS / "mlflow-model-aliases.png"), full_page=True)
    page.close()
