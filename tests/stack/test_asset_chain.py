"""The asset chain under a real scheduler (what ``dag.test()`` cannot show).

``./run ui``'s stack (api-server, scheduler, dag-processor, triggerer;
LocalExecutor; PostgreSQL when present) on a fresh home, with every cron set to
tick each minute but the cron schedules off, as ``./run ui`` starts them: no run
starts by itself. Only ``ingest`` is triggered, through the REST API as an
uploader would; every other run is the scheduler's own, started by an asset event:

    ingest (features 2013-01) --batch_landed--> drift_monitor
        (no champion yet: retrain) --retrain_request--> retrain (nothing labelled: skip)
    ingest (labels 2013-01) --labels_landed--> canary_review

The demo follows the same hops with ``dag.test()`` (pipeline/apps/assets.py);
here the scheduler decides which runs exist and what they consumed.
"""

from __future__ import annotations

import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import live_stack


def _api(stack: Any, method: str, path: str, body: Any = None) -> Any:
    return stack.api(method, path, body)


DAG_IDS = ("canary_review", "drift_monitor", "ingest", "landing", "retrain", "tune")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with live_stack(tmp_path_factory.mktemp("asset-chain")) as running:
        running.started = time.monotonic()  # every DAG is parsed by now
        yield running


def _runs(stack: Any, dag_id: str) -> list[dict[str, Any]]:
    return list(_api(stack, "GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=20")["dag_runs"])


def _wait_run(
    stack: Any, dag_id: str, n: int = 1, run_type: str = "asset_triggered", timeout: float = 420
) -> dict[str, Any]:
    """The n-th run of ``dag_id`` of this type (oldest first), once it has finished."""
    deadline = time.monotonic() + timeout
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = sorted(
            (r for r in _runs(stack, dag_id) if r["run_type"] == run_type),
            key=lambda r: r["run_after"],
        )
        if len(runs) >= n and runs[n - 1]["state"] in ("success", "failed"):
            return runs[n - 1]
        time.sleep(2)
    raise AssertionError(f"{dag_id} run {n} did not finish: {runs}; logs in {stack.home}/ui")


def _xcom(stack: Any, dag_id: str, run: dict[str, Any], task: str) -> Any:
    run_id = urllib.parse.quote(run["dag_run_id"], safe="")
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/return_value"
    return _api(stack, "GET", path)["value"]


def _ingest(stack: Any, kind: str) -> dict[str, Any]:
    return dict(stack.trigger("ingest", {"source": "2013-01", "kind": kind}))


def test_nothing_runs_before_it_is_asked(stack: Any) -> None:
    """The scheduler has parsed every DAG (the stack waits for it) and nothing ran."""
    assert {dag_id: _runs(stack, dag_id) for dag_id in DAG_IDS} == {d: [] for d in DAG_IDS}


@pytest.mark.slow
def test_only_ingest_is_triggered_the_scheduler_follows_the_assets(stack: Any) -> None:
    _ingest(stack, "features")
    landed = _wait_run(stack, "ingest", run_type="manual")
    assert landed["state"] == "success"

    monitor = _wait_run(stack, "drift_monitor")
    assert monitor["state"] == "success"
    assert _xcom(stack, "drift_monitor", monitor, "which_batches") == ["2013-01"]
    decision = _xcom(stack, "drift_monitor", monitor, "decide")
    assert decision["retrain"] is True
    assert decision["reason"] == "no champion yet: train the first one"

    retrain = _wait_run(stack, "retrain")
    plan = _xcom(stack, "retrain", retrain, "plan")
    assert plan["trigger"] == "drift"  # from the event, not a param
    assert plan["reasons"] == ["no champion yet: train the first one"]
    assert plan["skip"] is True
    assert plan["reason"] == "no labelled batch yet: nothing to train on"

    _ingest(stack, "labels")
    assert _wait_run(stack, "ingest", n=2, run_type="manual")["state"] == "success"
    review = _wait_run(stack, "canary_review")
    assert _xcom(stack, "canary_review", review, "which_batches") == ["2013-01"]
    (quality,) = _xcom(stack, "canary_review", review, "quality")
    assert quality["decision"]["reason"] == "no predictions for this batch"
    # the runs consumed the events of their own assets (what the scheduler handed them)
    for dag_id, run, asset in (
        ("drift_monitor", monitor, "batch_landed"),
        ("retrain", retrain, "retrain_request"),
        ("canary_review", review, "labels_landed"),
    ):
        run_id = urllib.parse.quote(run["dag_run_id"], safe="")
        events = _api(stack, "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/upstreamAssetEvents")
        assert {e["name"] for e in events["asset_events"]} == {asset}, events


def test_no_run_started_by_itself_once_the_cron_ticks_passed(stack: Any) -> None:
    """After the chain (and at least one tick of every minute-cron since the stack
    started): the runs are the two the test triggered and the three their assets
    started, none scheduled."""
    wait = 65 - (time.monotonic() - stack.started)
    if wait > 0:
        time.sleep(wait)  # the chain usually takes longer: a tick has passed
    time.sleep(5)  # one scheduler loop after it
    runs = {dag_id: sorted(r["run_type"] for r in _runs(stack, dag_id)) for dag_id in DAG_IDS}
    assert runs == {
        "canary_review": ["asset_triggered"],
        "drift_monitor": ["asset_triggered"],
        "ingest": ["manual", "manual"],
        "landing": [],  # its sweep is a cron too
        "retrain": ["asset_triggered"],
        "tune": [],
    }
