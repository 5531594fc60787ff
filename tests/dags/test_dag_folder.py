"""The DAG folder: imports cleanly, touches nothing at parse time, follows the policy."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.support import airflow_script

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"

# Parse the folder in a fresh interpreter where every network connection and every
# SQLite file opened outside the Airflow home raises: a DAG file that queries a
# database, looks up a connection or calls a service at parse time fails to import.
PARSE = textwrap.dedent(
    """
    import json, socket, sqlite3, sys, time
    from pathlib import Path

    calls = []
    def refuse_connect(self, address):
        calls.append(f"socket.connect{address!r}")
        raise OSError(f"network access at parse time: {address!r}")
    socket.socket.connect = refuse_connect
    _sqlite_connect = sqlite3.connect
    def guarded_sqlite(database, *a, **k):
        if "{airflow_home}" not in str(database):
            calls.append(f"sqlite3.connect({database!r})")
            raise sqlite3.OperationalError(f"database opened at parse time: {database!r}")
        return _sqlite_connect(database, *a, **k)
    sqlite3.connect = guarded_sqlite

    from airflow.dag_processing.dagbag import BundleDagBag
    folder = Path(sys.argv[1])
    t0 = time.monotonic()
    bag = BundleDagBag(folder, bundle_path=folder)
    seconds = time.monotonic() - t0
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "tags": sorted(dag.tags),
            "doc_md": bool(dag.doc_md and dag.doc_md.strip()),
            "timetable": type(dag.timetable).__name__,
            "max_active_runs": dag.max_active_runs,
            "has_dag_failure_callback": bool(dag.on_failure_callback),
            "params": {k: (dag.params.get_param(k).description or "") for k in dag.params},
            "tasks": {
                t.task_id: {
                    "retries": t.retries,
                    "doc": bool(getattr(t, "doc_md", None)),
                    "on_failure_callback": bool(t.on_failure_callback),
                    "upstream": sorted(t.upstream_task_ids),
                    "links": [link.name for link in t.operator_extra_links],
                    "type": type(t).__name__,
                }
                for t in dag.tasks
            },
        }
    print(json.dumps({"errors": {str(k): v for k, v in bag.import_errors.items()},
                      "calls": calls, "dags": dags, "seconds": seconds}))
    """
)


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    # the metadata database is reachable only at a path the guard lets through: parsing
    # must not need it
    home = tmp_path_factory.mktemp("airflow-home")
    return airflow_script(PARSE.replace("{airflow_home}", str(home)), str(DAGS), home=home)


def test_the_folder_imports_without_errors_or_parse_time_io(parsed: dict) -> None:
    assert parsed["errors"] == {}
    assert parsed["calls"] == []
    assert sorted(parsed["dags"]) == [
        "approval",
        "canary_review",
        "drift_monitor",
        "ingest",
        "landing",
        "retrain",
        "tune",
    ]


def test_every_dag_and_task_is_documented_tagged_and_retried(parsed: dict) -> None:
    for dag_id, dag in parsed["dags"].items():
        assert dag["tags"] == ["cosine-retrain"], dag_id
        assert dag["doc_md"], dag_id
        assert dag["has_dag_failure_callback"], dag_id
        for name, description in dag["params"].items():
            assert description, f"{dag_id}.{name} has no description for the trigger form"
        for task_id, task in dag["tasks"].items():
            if task["type"] == "HITLOperator":  # a retry would ask the person again
                assert task["retries"] == 0, f"{dag_id}.{task_id}"
            else:
                assert task["retries"] >= 1, f"{dag_id}.{task_id}"
            assert task["doc"], f"{dag_id}.{task_id} has no doc_md"
            assert task["on_failure_callback"], f"{dag_id}.{task_id}"


def test_schedules_and_concurrency(parsed: dict) -> None:
    dags = parsed["dags"]
    assert dags["drift_monitor"]["timetable"] == "AssetOrTimeSchedule"
    assert dags["retrain"]["timetable"] == "AssetOrTimeSchedule"
    assert dags["canary_review"]["timetable"] == "AssetTriggeredTimetable"
    assert dags["ingest"]["timetable"] == "NullTimetable"
    assert dags["landing"]["timetable"] == "NoCatchUpCron"  # the landing zone's sweep
    assert dags["landing"]["max_active_runs"] == 1  # one sweep at a time: each file once
    assert dags["tune"]["timetable"] == "NoCatchUpCron"  # quarterly, and manual
    assert dags["tune"]["max_active_runs"] == 1  # one process holds a study at a time
    for dag_id in ("drift_monitor", "retrain", "canary_review"):
        assert dags[dag_id]["max_active_runs"] == 1, dag_id
    # a run per held version: a person's pending answer never holds the canary review
    assert dags["approval"]["timetable"] == "AssetTriggeredTimetable"
    assert dags["approval"]["max_active_runs"] > 1


def test_the_retrain_wiring(parsed: dict) -> None:
    tasks = parsed["dags"]["retrain"]["tasks"]
    assert tasks["train"]["type"] == "TrainOperator"
    assert tasks["train"]["links"] == ["MLflow run"]
    assert tasks["train"]["upstream"] == ["export_window", "plan"]
    assert tasks["register"]["upstream"] == ["plan", "train"]
    assert tasks["gate"]["upstream"] == ["register"]
    assert tasks["export_window"]["upstream"] == ["branch", "plan"]
    monitor = parsed["dags"]["drift_monitor"]["tasks"]
    assert monitor["validate"]["upstream"] == ["which_batches"]
    assert monitor["drift"]["upstream"] == ["validate"]
    assert monitor["score"]["upstream"] == ["validate"]
    assert monitor["decide"]["upstream"] == ["drift", "score", "validate"]
    assert monitor["refused"]["upstream"] == ["validate"]
    assert monitor["request_retrain"]["upstream"] == ["branch", "decide"]


def test_the_kubernetes_backend_parses(tmp_path: Path) -> None:
    """retrain.backend=kubernetes swaps the training task for a GPU pod."""
    script = PARSE.replace("{airflow_home}", str(tmp_path))
    kubernetes = {"COSINE_RETRAIN_RETRAIN__BACKEND": "kubernetes"}
    refused = airflow_script(script, str(DAGS), home=tmp_path, extra_env=kubernetes)
    # the local defaults are files on the worker: the DAG files say what to set instead
    assert "retrain.py" in " ".join(refused["errors"]), refused["errors"]
    assert all("mlflow.tracking_uri" in e for e in refused["errors"].values())
    kubernetes |= {
        "COSINE_RETRAIN_MLFLOW__TRACKING_URI": "http://mlflow:5000",
        "COSINE_RETRAIN_STORAGE__KIND": "s3",
        "COSINE_RETRAIN_STORAGE__BUCKET": "team-data",
    }
    out = airflow_script(script, str(DAGS), home=tmp_path, extra_env=kubernetes)
    assert out["errors"] == {}
    tasks = out["dags"]["retrain"]["tasks"]
    assert tasks["train_pod"]["type"] == "KubernetesPodOperator"
    assert "train" not in tasks
    assert tasks["register"]["upstream"] == ["plan", "train_result"]
