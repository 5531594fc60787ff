"""Triggers at once: a burst of ``retrain_request`` events and a cron tick.

The issue: "ten retrain_request events and a cron tick at once lead to one
retrain at a time and no duplicate registrations". This runs the real thing:
an Airflow scheduler, a dag-processor and an api-server (the execution API the
LocalExecutor's task processes report to) on a fresh PostgreSQL database, the
shipped DAG folder, and the small training config of the replay tests.

January's features and labels are landed first, so the window is ``[2013-01]``.
Then, in the same instant, the ``retrain`` DAG is unpaused (with
``catchup=False`` its timetable creates a run for the most recent cron tick at
once, STACK_NOTES 1.2) and the events are posted through the REST API
(``POST /api/v2/assets/events``, what a producing task's outlet amounts to).

What must hold:

- at no moment are two ``retrain`` runs running (``max_active_runs=1``): seen
  by polling the runs' states every half second, and again from the start/end
  times the metadata database recorded;
- exactly one run trains (the window's run name is its key) and every later run
  skips with "window already trained";
- the registry holds no two versions for the same (training run, candidate),
  and MLflow no two finished runs with the same run name.

Long mode (``FAULTS=long``) runs that: 10 events, and the first run trains
the window for real (about three minutes on 2 cores, under load).

Quick mode cannot afford a real stack: migrating PostgreSQL and starting the
three components alone took 35-70 s here, a trained run 60-90 s more, and the
whole quick faults suite has 150 s. Its cheapest faithful stand-in keeps what
is ours and leaves out what is Airflow's: ``max_active_runs=1`` and the
``AssetOrTimeSchedule`` are checked where the DAG folder is parsed
(tests/dags/test_dag_folder.py::test_schedules_and_concurrency); here 4
``retrain_request`` plans and a scheduled one call ``plan_retrain`` at the same
instant (threads) after a finished run of the window exists, and each must
coalesce into it ("window already trained") without registering anything.
That a second registration of one run creates nothing is
tests/pipeline/steps/test_registration.py::test_registering_again_creates_nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline import flow
from tests.support import (
    TINY_REPLAY_ENV,
    create_postgres_database,
    drop_postgres_database,
    free_port,
    postgres_unavailable,
    stack_env,
    stop_process_group,
)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

_WHY = postgres_unavailable()
pytestmark = pytest.mark.skipif(
    _WHY is not None,
    reason=f"needs PostgreSQL for a real scheduler with the LocalExecutor: {_WHY}",
)


def _call(url: str, body: Any = None, method: str = "GET") -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


def _time(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


LAND = """
from pipeline.apps.cli import main
assert main(["ingest", "2013-01"]) == 0
assert main(["validate", "2013-01"]) == 0  # a retrain trains only on validated batches
assert main(["ingest-labels", "2013-01"]) == 0
"""
# the window's training run exists and finished (what plan_retrain looks up)
SEED = """
from mlflow import MlflowClient
from pipeline.flow import RetrainRequest, build_env, plan_retrain
env = build_env()
plan = plan_retrain(env, RetrainRequest(trigger="manual"))
assert not plan.skip, plan
client = env.client
experiment = client.create_experiment(env.experiment)
run = client.create_run(experiment, run_name=plan.run_name)
client.set_terminated(run.info.run_id, "FINISHED")
if register:  # a window is done once its run registered a version
    client.create_registered_model(env.model)
    client.create_model_version(env.model, f"runs:/{run.info.run_id}/model", run.info.run_id)
print("seeded", plan.run_name, run.info.run_id)
"""


@pytest.fixture(scope="module")
def airflow_stack(
    tmp_path_factory: pytest.TempPathFactory, fault_mode: Any
) -> Iterator[dict[str, Any]]:
    if not fault_mode.long:
        pytest.skip("a real Airflow stack and a trained run: FAULTS=long (quick: the test below)")
    tmp = tmp_path_factory.mktemp("triggers")
    home, airflow_home, logs = tmp / "home", tmp / "airflow", tmp / "logs"
    logs.mkdir()
    db_name, db_url = create_postgres_database("airflow_triggers")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **stack_env(airflow_home, home, port, db_url, "LocalExecutor"),
        **TINY_REPLAY_ENV,
        "AIRFLOW__CORE__PARALLELISM": "4",
        # paused at creation: the test unpauses only `retrain`, at the moment of the burst
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__API__WORKERS": "1",
        "GIT_PYTHON_REFRESH": "quiet",
        # a tick each minute: the burst is sent as one passes (no tick from before the
        # unpause ever runs: pipeline/apps/timetables.py)
        "COSINE_RETRAIN_RETRAIN__SCHEDULE": "* * * * *",
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def launch(name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        with open(logs / f"{name}.log", "wb") as fh:
            procs[name] = subprocess.Popen(
                cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=tmp
            )
        return procs[name]

    try:
        # January's features and labels, while the metadata database is migrated
        land = launch("land", [sys.executable, "-c", LAND])
        migrate = launch("migrate", [str(BIN / "airflow"), "db", "migrate"])
        for name, proc in (("migrate", migrate), ("land", land)):
            assert proc.wait(timeout=300) == 0, (logs / f"{name}.log").read_text()[-3000:]
        for component in ("api-server", "scheduler", "dag-processor"):
            launch(component, [str(BIN / "airflow"), component])
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, KeyError):
                health = _call(f"{base}/api/v2/monitor/health")
                retrain = _call(f"{base}/api/v2/dags/retrain")
                if health["scheduler"]["status"] == "healthy" and retrain["dag_id"] == "retrain":
                    break
            for name in ("api-server", "scheduler", "dag-processor"):
                proc = procs[name]
                assert proc.poll() is None, (logs / f"{name}.log").read_text()[-3000:]
            time.sleep(1)
        else:
            pytest.fail(f"the Airflow stack was not ready in 240 s; logs in {logs}")
        yield {"base": base, "home": home, "logs": logs, "procs": procs}
    finally:
        for proc in procs.values():
            stop_process_group(proc, grace=15)
        drop_postgres_database(db_name)


def _runs(base: str) -> list[dict[str, Any]]:
    return _call(f"{base}/api/v2/dags/retrain/dagRuns?limit=100&order_by=run_after")["dag_runs"]


def _settled(base: str, runs: list[dict[str, Any]]) -> bool:
    if not runs or any(r["state"] not in ("success", "failed") for r in runs):
        return False
    queued = _call(f"{base}/api/v2/dags/retrain/assets/queuedEvents")
    return not queued.get("queued_events")


def test_a_burst_of_requests_and_a_cron_tick_train_once(
    airflow_stack: dict[str, Any], fault_mode: Any
) -> None:
    base, home = airflow_stack["base"], airflow_stack["home"]
    events = int(fault_mode.pick(4, 10))
    assets = _call(f"{base}/api/v2/assets?name_pattern=retrain_request")["assets"]
    (asset,) = [a for a in assets if a["name"] == "retrain_request"]

    def emit(i: int) -> int:
        body = {
            "asset_id": asset["id"],
            "extra": {"trigger": "drift", "reason": f"burst {i}", "batch_id": "2013-01"},
        }
        return _call(f"{base}/api/v2/assets/events", body, "POST")["id"]

    # the cron tick and the burst, at once; events for a paused DAG are not queued, so
    # unpause first (which starts no run: the next tick is the first), then send the burst
    # as the next minute's tick passes
    unpaused = _call(f"{base}/api/v2/dags/retrain", {"is_paused": False}, "PATCH")
    assert unpaused["is_paused"] is False
    time.sleep(60.2 - time.time() % 60)
    with ThreadPoolExecutor(max_workers=events) as pool:
        emitted = list(pool.map(emit, range(events)))
    assert len(set(emitted)) == events

    most_running = 0
    deadline = time.monotonic() + fault_mode.pick(420, 900)
    runs: list[dict[str, Any]] = []
    quiet_since = None
    while time.monotonic() < deadline:
        runs = _runs(base)
        running = [r["dag_run_id"] for r in runs if r["state"] == "running"]
        most_running = max(most_running, len(running))
        assert len(running) <= 1, f"two retrain runs at once: {running}"
        if _settled(base, runs):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 3:  # nothing new comes in
                break
        else:
            quiet_since = None
        for name in ("api-server", "scheduler", "dag-processor"):
            proc = airflow_stack["procs"][name]
            assert proc.poll() is None, (
                f"{name} died: " + ((airflow_stack["logs"] / f"{name}.log").read_text()[-3000:])
            )
        time.sleep(0.5)
    else:
        pytest.fail(f"runs did not settle: {[(r['dag_run_id'], r['state']) for r in runs]}")
    assert most_running == 1
    t0 = min(_time(r["start_date"]) or 0 for r in runs)
    for r in runs:  # the timeline, for the report (pytest -s)
        start, end = _time(r["start_date"]), _time(r["end_date"])
        print(f"{r['dag_run_id']:60} {r['state']:8} {start - t0:7.1f} {end - t0:7.1f}")

    kinds = Counter(r["run_type"] for r in runs)
    assert kinds["scheduled"] >= 1, kinds  # the tick of the burst, and any after it
    assert kinds["asset_triggered"] >= 1, kinds
    assert all(r["state"] == "success" for r in runs), [(r["dag_run_id"], r["state"]) for r in runs]
    # the recorded intervals never overlap
    spans = sorted((_time(r["start_date"]), _time(r["end_date"]), r["dag_run_id"]) for r in runs)
    for (_, end, a), (start, _, b) in itertools.pairwise(spans):
        assert end is not None, f"{a} overlaps {b}"
        assert start is not None, f"{a} overlaps {b}"
        assert end <= start, f"{a} overlaps {b}"

    # every event was consumed by some asset-triggered run
    consumed: set[int] = set()
    trained, skipped = [], []
    for run in runs:
        rid = urllib.parse.quote(run["dag_run_id"], safe="")
        if run["run_type"] == "asset_triggered":
            upstream = _call(f"{base}/api/v2/dags/retrain/dagRuns/{rid}/upstreamAssetEvents")
            consumed |= {e["id"] for e in upstream["asset_events"]}
        tis = {
            t["task_id"]: t["state"]
            for t in _call(f"{base}/api/v2/dags/retrain/dagRuns/{rid}/taskInstances")[
                "task_instances"
            ]
        }
        (trained if tis.get("train") == "success" else skipped).append((run["dag_run_id"], tis))
    # Every request is answered by a run that planned after it. Not every event is linked
    # to a run: one that lands while the scheduler turns the queue into a run can miss
    # both that run and the queue (seen: 2 of 4); the run queued behind answers it.
    stamps = {
        e["id"]: _time(e["timestamp"])
        for e in _call(f"{base}/api/v2/assets/events?asset_id={asset['id']}&limit=100")[
            "asset_events"
        ]
    }
    last_start = max(_time(r["start_date"]) or 0 for r in runs)
    assert all(stamps[e] <= last_start for e in emitted), (stamps, last_start)
    print(f"events linked to a run: {len(consumed & set(emitted))} of {events}")
    assert len(trained) == 1, trained
    for run_id, tis in skipped:
        assert tis["skip"] == "success", (run_id, tis)
        assert tis.get("train") == "skipped", (run_id, tis)
        xcom = _call(
            f"{base}/api/v2/dags/retrain/dagRuns/{urllib.parse.quote(run_id, safe='')}"
            "/taskInstances/skip/xcomEntries/return_value"
        )
        assert "window already trained" in str(xcom["value"]), (run_id, xcom)

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("flight_delay")
    finished = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'")
    names = Counter(r.info.run_name for r in finished)
    assert len(names) == 1, names
    assert max(names.values()) == 1, names
    versions = client.search_model_versions("name='flight_delay'")
    keys = Counter((v.tags.get("training_run_id"), v.tags.get("candidate")) for v in versions)
    assert versions, keys
    assert max(keys.values()) == 1, keys
    assert {k[0] for k in keys} == {finished[0].info.run_id}


def _january_landed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh home (tiny training config) with January's features and labels."""
    for key, value in TINY_REPLAY_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COSINE_RETRAIN_DATASET_SPEC", str(ROOT / "configs/datasets/flights.yaml"))
    monkeypatch.delenv("COSINE_RETRAIN_CONFIG", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from pipeline.flow import build_env
    from pipeline.flow import validate as env_validate
    from pipeline.steps.landing.ingest import ingest_flights_month
    from pipeline.steps.landing.labels import ingest_flights_labels

    env = build_env()
    ingest_flights_month(env.store, env.spec, 1)
    env_validate(env, "2013-01")  # a retrain trains only on validated batches
    ingest_flights_labels(env.store, env.spec, 1)
    return env


def test_requests_at_once_coalesce_into_the_trained_window(
    tmp_path: Path, fault_mode: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quick stand-in: concurrent plans after a finished run of the window all skip."""
    events = int(fault_mode.pick(4, 10))
    env = _january_landed(tmp_path, monkeypatch)
    seeded: dict[str, Any] = {"register": True}
    exec(SEED, seeded)  # the window's finished and registered run, as in the real stack
    window_run = seeded["plan"].run_name

    def plan(i: int) -> flow.Plan:
        trigger = "scheduled" if i == events else "drift"
        request = flow.RetrainRequest(trigger=trigger, reasons=[f"burst {i}"])
        return flow.plan_retrain(flow.build_env(), request)

    with ThreadPoolExecutor(max_workers=events + 1) as pool:
        plans = list(pool.map(plan, range(events + 1)))
    for p in plans:
        assert p.skip is True, p
        assert p.run_name == window_run
        assert p.reason.startswith("window already trained by run "), p.reason
    assert {p.trigger for p in plans} == {"drift", "scheduled"}
    client = env.client
    assert len(client.search_model_versions("name='flight_delay'")) == 1  # the seeded one
    runs = client.search_runs([client.get_experiment_by_name("flight_delay").experiment_id])
    assert [r.info.run_name for r in runs] == [window_run]


def test_a_window_trained_but_never_registered_is_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that finished training but whose register task never completed must
    not block its window forever: the next plan goes on (and registers it)."""
    _january_landed(tmp_path, monkeypatch)
    seeded: dict[str, Any] = {"register": False}
    exec(SEED, seeded)
    request = flow.RetrainRequest(trigger="drift", reasons=["drift: 40%"])
    plan = flow.plan_retrain(flow.build_env(), request)
    assert plan.skip is False, plan
    assert plan.run_name == seeded["plan"].run_name
    assert plan.reasons[-1].endswith("trained this window but registered no version")
