"""A backfill under a real scheduler, killed in the middle: every batch exactly once.

``./run ui``'s stack (api-server, scheduler, dag-processor, triggerer; LocalExecutor;
PostgreSQL when present), cron schedules off as ``./run ui`` starts them, on a home
where ``./run demo --months 1-2`` (tiny training) has made a champion from January:
the backfill is scored and reviewed by a real model. Six months of the flights example
(March to August, 2,000 rows each) are dropped into the landing zone at once, May's
holding 200 flights from an airport the spec does not allow; the ``landing`` DAG is
triggered through the REST API (what its cron tick does). Its one ``batch_landed``
event starts one ``drift_monitor`` run; while that run works through the six batches
the scheduler's process group is killed (SIGKILL) and the scheduler is started
again. Then the six label files are dropped at once and swept; ``canary_review`` follows the event.
Last, a person triggers ``retrain``: its plan is the training window.

What the test checks comes from the store's ledger (one object per batch and step)
and the Airflow REST API (which runs exist, what each consumed and returned):

- every landed batch was validated, drift-checked and scored once, by one
  drift monitor run (its Great Expectations report written once: the retry of
  ``validate`` that the kill caused finds the reports already stored and reuses them;
  measured 2026-12-07: one batch validated when the kill came, all five reused by the
  retry, so the first try's task process outlived the scheduler and finished), and reviewed
  once, by one canary review run: the champion's predictions of every row are in
  the store, and the review's live AUC of each batch is the one those predictions and
  the labels give;
- May was quarantined, went no further, and is in no training window; its labels
  wait in the zone (nothing lost: every dropped file is landed or waiting);
- the runs each DAG has, and who started them.

The drift thresholds and the live-quality SLO are set out of reach
(``COSINE_RETRAIN_DRIFT__SHARE_THRESHOLD=1``, ``..._NULL_SHARE_THRESHOLD=1``,
``COSINE_RETRAIN_QUALITY__SLO=0.01``): the retrains a drifted or weak batch asks for
are tested in tests/dags; here the runs are the backfill's own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.steps.landing.ingest import flights_frames
from tests.support import ROOT, live_stack, run_demo
from training.api import load_spec

EARLIER = ["2013-01", "2013-02"]  # the demo's: January trained the champion
MONTHS = [f"2013-{m:02d}" for m in range(3, 9)]
BAD = "2013-05"
GOOD = [m for m in MONTHS if m != BAD]
ROWS = 2000
DAG_IDS = ("approval", "canary_review", "drift_monitor", "ingest", "landing", "retrain", "tune")
MONITOR_STEPS = ("validated", "drift_checked", "scored")
# the steps each step of a batch needs before it (the DAGs' dependencies, labels come later)
AFTER = {
    "validated": ("landed",),
    "drift_checked": ("validated",),
    "scored": ("validated",),
    "labels_received": ("drift_checked", "scored"),
    "reviewed": ("labels_received",),
}
# the scheduler is killed, so the old one's job stops heartbeating: the new one resets
# the orphaned task instances once that job is older than scheduler_health_check_threshold
# (30 s); look for them every 5 s instead of every 5 minutes
RECOVERY = {
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "5",
    "COSINE_RETRAIN_DRIFT__SHARE_THRESHOLD": "1",
    "COSINE_RETRAIN_DRIFT__NULL_SHARE_THRESHOLD": "1",
    "COSINE_RETRAIN_QUALITY__SLO": "0.01",
}


def _frames() -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """``ROWS`` flights of each month, evenly spread over it (features, labels); May's
    first 200 from an airport the spec does not allow. (A month's first 2,000 flights
    are its first days: July's have pressure 48 % null, and the suite refuses them.)"""
    spec = load_spec(ROOT / "configs" / "datasets" / "flights.yaml")
    out = {}
    for batch in MONTHS:
        _, features, labels = flights_frames(spec, batch)
        features = features.iloc[:: len(features) // ROWS].head(ROWS).reset_index(drop=True)
        if batch == BAD:
            features.loc[:199, "origin"] = "XXX"
        out[batch] = (features, labels[labels[spec.id_column].isin(features[spec.id_column])])
    return out


def _runs(stack: Any, dag_id: str) -> list[dict[str, Any]]:
    runs = stack.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=50")["dag_runs"]
    return sorted(runs, key=lambda r: r["run_after"])


def _finished(stack: Any, dag_id: str, n: int, timeout: float = 420) -> list[dict[str, Any]]:
    """The DAG's runs once it has at least ``n`` and every one has finished."""
    deadline = time.monotonic() + timeout
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = _runs(stack, dag_id)
        if len(runs) >= n and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        time.sleep(2)
    raise AssertionError(f"{dag_id}: {n} finished runs expected: {runs}; logs in {stack.home}/ui")


def _path(dag_id: str, run: dict[str, Any]) -> str:
    return f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}"


def _xcom(stack: Any, dag_id: str, run: dict[str, Any], task: str) -> Any:
    path = f"{_path(dag_id, run)}/taskInstances/{task}/xcomEntries/return_value"
    return stack.api("GET", path)["value"]


def _tasks(stack: Any, dag_id: str, run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    answer = stack.api("GET", f"{_path(dag_id, run)}/taskInstances?limit=100")
    return {t["task_id"]: t for t in answer["task_instances"]}


def _ledger(home: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """The store's ledger read from its files (batch -> step -> entry), without the code."""
    root = home / "store" / "ledger" / "flights"
    if not root.is_dir():
        return {}
    return {
        b.name: {p.stem: json.loads(p.read_text()) for p in b.glob("*.json")}
        for b in sorted(root.iterdir())
    }


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _kill_in_the_middle(stack: Any, timeout: float = 420) -> dict[str, Any]:
    """SIGKILL the scheduler's process group as soon as the monitor has recorded its
    first step (a batch validated or quarantined); start it again. Which batches the
    ledger showed checked and scored then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ledger = _ledger(stack.home)
        done = [b for b in MONTHS if {"validated", "quarantined"} & ledger.get(b, {}).keys()]
        if done:
            scheduler = stack.procs["scheduler"]
            os.killpg(scheduler.pid, signal.SIGKILL)
            scheduler.wait(timeout=30)
            scored = [b for b in MONTHS if "scored" in ledger.get(b, {})]
            stack.restart("scheduler")
            return {"checked": done, "scored": scored}
        time.sleep(0.2)
    raise AssertionError(f"the monitor recorded no step; logs in {stack.home}/ui")


@pytest.fixture(scope="module")
def backfill(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("backfill")
    zone = home / "store" / "landing"
    frames = _frames()
    out: dict[str, Any] = {"home": home, "frames": frames}
    demo = run_demo(home, "1-2")
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    made = re.search(r"gate +v(\d+) PASSED -> first model: champion", demo.stdout)
    assert made, demo.stdout[-3000:]
    out["champion"] = made[1]
    out["before"] = _ledger(home)
    with live_stack(home, RECOVERY) as stack:
        started = time.monotonic()
        (zone / "features").mkdir(parents=True)
        for batch, (features, _) in frames.items():
            features.to_parquet(zone / "features" / f"{batch}.parquet", index=False)
        stack.trigger("landing", {})
        out["kill"] = _kill_in_the_middle(stack)
        out["monitor"] = _finished(stack, "drift_monitor", 1)
        out["features_done"] = time.monotonic() - started

        (zone / "labels").mkdir(parents=True)
        for batch, (_, labels) in frames.items():
            labels.to_parquet(zone / "labels" / f"{batch}.parquet", index=False)
        stack.trigger("landing", {})
        out["review"] = _finished(stack, "canary_review", 1)
        _finished(stack, "landing", 2)

        # a person asks for a retrain: its plan is the window it trains
        retrain = stack.trigger("retrain", {"reason": "after the backfill"})
        deadline = time.monotonic() + 300
        while _tasks(stack, "retrain", retrain).get("plan", {}).get("state") != "success":
            assert time.monotonic() < deadline, _tasks(stack, "retrain", retrain)
            time.sleep(2)
        out["plan"] = _xcom(stack, "retrain", retrain, "plan")
        out["wall_s"] = time.monotonic() - started

        runs = {dag_id: _runs(stack, dag_id) for dag_id in DAG_IDS}
        out["runs"] = runs
        out["xcom"] = {
            (dag_id, run["dag_run_id"], task): _xcom(stack, dag_id, run, task)
            for dag_id, task in (
                ("landing", "sweep_features"),
                ("landing", "sweep_labels"),
                ("drift_monitor", "which_batches"),
                ("drift_monitor", "validate"),
                ("drift_monitor", "score"),
                ("canary_review", "which_batches"),
                ("canary_review", "quality"),
            )
            for run in runs[dag_id]
        }
        out["monitor_tasks"] = _tasks(stack, "drift_monitor", out["monitor"][0])
        out["events"] = {
            dag_id: stack.api("GET", f"{_path(dag_id, runs[dag_id][0])}/upstreamAssetEvents")
            for dag_id in ("drift_monitor", "canary_review")
        }
    out["ledger"] = _ledger(home)
    figures = {
        "batches": len(MONTHS),
        "wall_s": round(out["wall_s"], 1),
        "features_done_s": round(out["features_done"], 1),
        "runs": {d: [r["run_type"] for r in rs] for d, rs in out["runs"].items()},
        "steps": {b: sorted(s) for b, s in out["ledger"].items()},
        "killed_after": out["kill"]["checked"],
        "tries": {t: ti["try_number"] for t, ti in out["monitor_tasks"].items()},
        "reused": [
            v["batch_id"]
            for (d, _, t), vs in out["xcom"].items()
            if (d, t) == ("drift_monitor", "validate")
            for v in vs
            if v["summary"] and v["summary"].get("reused")
        ],
    }
    print("backfill figures:", json.dumps(figures))
    return out


def _values(out: dict[str, Any], dag_id: str, task: str) -> list[Any]:
    return [v for (d, _, t), v in out["xcom"].items() if (d, t) == (dag_id, task)]


def test_every_batch_is_checked_once_by_one_run_through_a_killed_scheduler(
    backfill: dict[str, Any],
) -> None:
    killed = backfill["kill"]
    assert len(killed["scored"]) < len(GOOD), ("killed after the backfill was done", killed)
    (monitor,) = backfill["monitor"]
    # one run for the six events' one sweep; it fails only on the batch it refused
    assert monitor["run_type"] == "asset_triggered"
    (which,) = _values(backfill, "drift_monitor", "which_batches")
    assert which == MONTHS
    tasks = backfill["monitor_tasks"]
    assert tasks["refused"]["state"] == "failed"
    assert {t: ti["state"] for t, ti in tasks.items() if t != "refused"} == {
        "which_batches": "success",
        "validate": "success",
        "drift": "success",
        "score": "success",
        "decide": "success",
        "branch": "success",
        "request_retrain": "skipped",  # no drift share reaches 1
        "no_retrain": "success",
    }
    assert monitor["state"] == "failed"
    # the task the kill interrupted ran again (a new try), as a transaction: it reuses the
    # stored result of each batch already validated (Great Expectations ran once a batch)
    assert max(ti["try_number"] for ti in tasks.values()) >= 2, tasks
    (validated,) = _values(backfill, "drift_monitor", "validate")
    assert [v["batch_id"] for v in validated] == MONTHS
    refused = {v["batch_id"]: v["refused"] for v in validated}
    assert [b for b, why in refused.items() if why] == [BAD]
    # the first try's refusal names the failed check; a retry finds May quarantined
    assert "origin" in refused[BAD] or f"{BAD} has no valid version: v1 quarantined" in refused[BAD]
    home = backfill["home"]
    reports = {}
    for batch in MONTHS:  # Great Expectations' result of each batch, stored once
        folder = home / f"store/reports/flights/{batch}/v1/validation"
        (reports[batch],) = (json.loads(p.read_text()) for p in folder.glob("*/summary.json"))
        assert reports[batch]["rows"] == ROWS
        assert reports[batch]["success"] is (batch != BAD)
    (failed,) = reports[BAD]["failed"]
    assert failed["column"] == "origin"
    assert failed["summary"].startswith(f"200 of {ROWS:,} values"), failed
    (scored,) = _values(backfill, "drift_monitor", "score")
    assert [s["batch_id"] for s in scored] == GOOD
    for s in scored:  # by the champion, every row, once
        champion = backfill["champion"]
        assert (s["champion_version"], s["rows"], s["canary_version"]) == (champion, ROWS, None)
        frame = pd.read_parquet(home / "store" / s["key"])
        assert len(frame) == ROWS
        assert frame["score"].between(0, 1).all()


def test_the_ledger_holds_every_step_of_every_batch(backfill: dict[str, Any]) -> None:
    ledger = backfill["ledger"]
    assert sorted(ledger) == [*EARLIER, *MONTHS]  # nothing lost, nothing extra
    assert {b: ledger[b] for b in EARLIER} == backfill["before"]  # the demo's: untouched
    for batch in GOOD:
        steps = ledger[batch]
        assert sorted(steps) == sorted(["landed", *MONITOR_STEPS, "labels_received", "reviewed"]), (
            batch
        )
        assert {s: e["version"] for s, e in steps.items()} == dict.fromkeys(steps, 1), batch
        assert steps["landed"]["detail"] == f"{ROWS} rows"
        # each step after the steps it needs (drift and score run side by side after
        # validation, so their order between themselves is free)
        at = {s: e["at"] for s, e in steps.items()}
        for step, needs in AFTER.items():
            assert all(at[n] < at[step] for n in needs), (batch, step, at)
    assert sorted(ledger[BAD]) == ["landed", "quarantined"]
    assert (backfill["home"] / f"store/datasets/flights/quarantine/{BAD}/v1").is_dir()


def test_the_quarantined_batch_is_in_no_window_and_its_labels_wait(
    backfill: dict[str, Any],
) -> None:
    plan = backfill["plan"]
    assert plan["trigger"] == "manual"
    assert plan["window"] == ["2013-06", "2013-07", "2013-08"]  # the latest 3 valid ones
    assert BAD not in plan["versions"]
    home = backfill["home"]
    zone = home / "store" / "landing"
    # every file dropped is landed, or (May's labels: no valid features) still waiting
    assert _names(zone / "landed" / "features") == [f"{b}.parquet" for b in MONTHS]
    assert _names(zone / "landed" / "labels") == [f"{b}.parquet" for b in GOOD]
    assert _names(zone / "labels") == [f"{BAD}.parquet"]
    assert _names(zone / "features") == []  # (the local store drops an emptied folder)
    assert not (zone / "refused").exists()
    features = _values(backfill, "landing", "sweep_features")
    assert [s["landed"] for s in features] == [MONTHS, []]  # the drop, in one sweep
    sweeps = _values(backfill, "landing", "sweep_labels")
    assert [s["landed"] for s in sweeps] == [[], GOOD]
    assert list(sweeps[-1]["waiting"]) == [f"{BAD}.parquet"]
    assert "quarantined: the labels wait until" in sweeps[-1]["waiting"][f"{BAD}.parquet"]


def test_each_labelled_batch_is_reviewed_once_by_one_run(backfill: dict[str, Any]) -> None:
    (review,) = backfill["review"]
    assert review["run_type"] == "asset_triggered"
    assert review["state"] == "success"
    (which,) = _values(backfill, "canary_review", "which_batches")
    assert which == GOOD
    (quality,) = _values(backfill, "canary_review", "quality")
    assert [q["batch_id"] for q in quality] == GOOD
    home = backfill["home"]
    for q in quality:  # the champion's live AUC: its stored scores against the labels dropped
        scores = pd.read_parquet(
            home
            / "store/predictions/flights"
            / q["batch_id"]
            / f"champion-v{backfill['champion']}/predictions.parquet"
        )
        _, labels = backfill["frames"][q["batch_id"]]
        pairs = scores.merge(labels, on="flight_id").dropna(subset=["late"])
        summary = q["summary"]
        assert (summary["model_version"], summary["rows"]) == (backfill["champion"], len(pairs))
        expected = roc_auc_score(pairs["late"].astype(int), pairs["score"])
        assert summary["value"] == pytest.approx(expected, abs=5e-7), (q["batch_id"], summary)
    for dag_id, asset in (("drift_monitor", "batch_landed"), ("canary_review", "labels_landed")):
        (event,) = backfill["events"][dag_id]["asset_events"]
        assert event["name"] == asset


def test_the_runs_each_dag_has(backfill: dict[str, Any]) -> None:
    """Two sweeps and a retrain by hand; every other run the scheduler's, one per event."""
    runs = {d: [r["run_type"] for r in rs] for d, rs in backfill["runs"].items()}
    assert runs == {
        "approval": [],  # no promotion held (no canary)
        "canary_review": ["asset_triggered"],
        "drift_monitor": ["asset_triggered"],
        "ingest": [],
        "landing": ["manual", "manual"],
        "retrain": ["manual"],
        "tune": [],
    }
    assert [r["state"] for r in backfill["runs"]["landing"]] == ["success", "success"]
