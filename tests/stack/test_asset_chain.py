"""The asset chain under a real scheduler (what ``dag.test()`` cannot show).

``./run ui``'s stack (api-server, scheduler, dag-processor, triggerer; SQLite,
LocalExecutor) on a fresh home. Only ``ingest`` is triggered, through the REST
API as an uploader would; every other run is the scheduler's own, started by an
asset event:

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


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with live_stack(tmp_path_factory.mktemp("asset-chain")) as running:
        yield running


def _runs(stack: Any, dag_id: str) -> list[dict[str, Any]]:
    return list(_api(stack, "GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=20")["dag_runs"])


def _wait_run(
    stack: Any, dag_id: str, n: int = 1, run_type: str = "asset_triggered", timeout: float = 420
) -> dict[str, Any]:
    """The n-th run of ``dag_id`` of this type (oldest first), once it has finished.

    Unpausing a DAG with a cron and ``catchup=False`` also starts a run for the
    cron's latest tick (Airflow's CronTriggerTimetable): those are ``scheduled``
    and not what this test follows."""
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
    conf = {"source": "2013-01", "kind": kind}
    return dict(
        _api(stack, "POST", "/api/v2/dags/ingest/dagRuns", {"logical_date": None, "conf": conf})
    )


@pytest.mark.slow
def test_only_ingest_is_triggered_the_scheduler_follows_the_assets(stack: Any) -> None:
    _ingest(stack, "features")
    landed = _wait_run(stack, "ingest", run_type="manual")
    assert landed["state"] == "success"

    monitor = _wait_run(stack, "drift_monitor")
    assert monitor["state"] == "success"
    assert _xcom(stack, "drift_monitor", monitor, "which_batch") == "2013-01"
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
    assert _xcom(stack, "canary_review", review, "which_batch") == "2013-01"
    quality = _xcom(stack, "canary_review", review, "quality")
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
