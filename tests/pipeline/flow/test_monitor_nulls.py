"""The drift monitor's own tasks (flow.monitor.drift and decide, as the DAG calls them)
on the loans spec: a column empty in the champion's reference that fills up requests a
retrain, and the record names the column; MLflow is real (SQLite in the home folder)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.apps.summary import monitor_lines
from pipeline.base.config import load_config
from pipeline.flow import Env, decide, drift
from pipeline.steps.landing.ingest import ingest_frame
from pipeline.steps.quality.reference import create_reference
from tests.pipeline import loans
from tests.pipeline.cli_support import clear_pipeline_env


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    clear_pipeline_env(monkeypatch, "MLFLOW_")
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COSINE_RETRAIN_DATASET_SPEC", str(loans.write_spec(tmp_path / "l.yaml")))
    return Env(load_config())


def test_a_filled_up_column_requests_a_retrain_through_the_monitor(env: Env) -> None:
    from pipeline.steps.registry.aliases import CHAMPION, move_alias

    jan = loans.batch("2024-01", 800, seed=1, region_nulls=1.0)
    create_reference(env.store, env.spec, jan, "jan")
    ingest_frame(
        env.store, env.spec, loans.batch("2024-07", 800, seed=2, region_nulls=0.2), "2024-07"
    )
    # a champion whose training sample is the "jan" reference snapshot
    env.client.create_registered_model(env.model)
    version = env.client.create_model_version(env.model, "file:///nowhere", None).version
    env.client.set_model_version_tag(env.model, version, "lineage.reference_snapshot", "jan")
    move_alias(env.client, env.store, env.model, CHAMPION, version, why="test", who="test")

    outcome = drift(env, "2024-07")
    assert outcome.checked
    assert outcome.reference == "jan"
    assert outcome.drift_share == 0.0
    assert outcome.drifted
    assert outcome.drifted_columns == ["region"]
    assert outcome.skipped == [
        "region: no values in the reference (null share 100% -> 20%); "
        "compared by its null share only"
    ]
    assert outcome.null_shifts == [
        "region: null share 100% in the reference -> 20% in the batch (moved more than 25%)"
    ]
    # the demo's month summary keeps the two findings apart (the share counts values)
    out = SimpleNamespace(lines=[], steps={})
    run = SimpleNamespace(
        results={
            "validate": [{"batch_id": "2024-07", "summary": {"evaluated": 9, "rows": 800}}],
            "drift": [outcome.to_xcom()],
        }
    )
    monitor_lines(out, run, failure=lambda *_: None)
    assert out.lines[1].endswith("; values drifted: none"), out.lines
    assert out.lines[2] == f"             null share moved: {outcome.null_shifts[0]}"
    decision = decide(env, "2024-07", outcome)
    assert decision.retrain
    assert decision.trigger == "drift"
    assert "region 100% -> 20%" in decision.reason
    # the drift alert says which null share moved
    from pipeline.base.store import get_json

    keys = [k for k in env.store.list("alerts/drift_detected") if k.endswith("/alert.json")]
    assert len(keys) == 1
    assert "null share moved: region: null share 100% in the reference -> 20% in the batch" in (
        str(get_json(env.store, keys[0]))
    )
