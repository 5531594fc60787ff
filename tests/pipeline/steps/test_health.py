"""Training health from a real run's MLflow history: tags and findings."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from pipeline.steps.registry.health import HEALTH_TAG, run_health
from tests.training.helpers import TINY
from training import api
from training.config.train import load_config
from training.results import TrainResult


def _run(tmp_path: Path, name: str, *extra: str) -> tuple[MlflowClient, TrainResult]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = load_config(
        None,
        [
            f"run_name={name}",
            f"output_dir={tmp_path / 'runs'}",
            *TINY,
            f"mlflow.tracking_uri={uri}",
            *extra,
        ],
    )
    return MlflowClient(uri), api.train(config)


@pytest.fixture(scope="module")
def learns(tmp_path_factory: pytest.TempPathFactory) -> tuple[MlflowClient, TrainResult]:
    return _run(tmp_path_factory.mktemp("health"), "learns")


def test_a_run_that_learns_has_no_flat_loss(learns: tuple[MlflowClient, TrainResult]) -> None:
    client, result = learns
    findings = run_health(client, result.mlflow_run_id, result)
    kinds = {f.kind for f in findings}
    assert "flat_loss" not in kinds
    tags = client.get_run(result.mlflow_run_id).data.tags
    assert tags[HEALTH_TAG] == (",".join(sorted(kinds)) or "ok")


def test_a_run_at_a_negligible_rate_is_flagged_flat(tmp_path: Path) -> None:
    client, result = _run(
        tmp_path, "flat", "schedule.lr_max=0.0000001", "schedule.lr_min=0.00000001"
    )
    findings = run_health(client, result.mlflow_run_id, result)
    flat = [f for f in findings if f.kind == "flat_loss"]
    assert len(flat) == 1
    assert flat[0].value < 0.02
    tags = client.get_run(result.mlflow_run_id).data.tags
    assert "flat_loss" in tags[HEALTH_TAG].split(",")
    assert "learned nothing" in tags[f"{HEALTH_TAG}.flat_loss"]


def test_cycle_starts_come_from_the_run_schedule(learns: tuple[MlflowClient, TrainResult]) -> None:
    # TINY: W=5, T0=20, m=1.5; cycles 1 and 2 start at steps 25 and 55. A copy of
    # the run's history tripled right there is reported at exactly those steps.
    client, result = learns
    run_id = result.mlflow_run_id
    history = client.get_metric_history(run_id, "train_loss")
    t0 = history[0].timestamp
    spikes = [
        Metric("train_loss", m.value * 3.0, t0, m.step)
        for m in history
        if 25 <= m.step < 35 or 55 <= m.step < 65
    ]
    other = MlflowClient(client.tracking_uri)
    copy = other.create_run(other.get_run(run_id).info.experiment_id).info.run_id
    assert {m.step for m in history} >= set(range(25, 35)) | set(range(55, 65))
    kept = [
        Metric("train_loss", m.value, t0, m.step)
        for m in history
        if not (25 <= m.step < 35 or 55 <= m.step < 65)
    ]
    other.log_batch(copy, metrics=kept + spikes)
    found = run_health(other, copy, result)
    assert [f.step for f in found if f.kind == "restart_spike"] == [25, 55]


def test_unknown_metric_is_a_clear_error(learns: tuple[MlflowClient, TrainResult]) -> None:
    client, result = learns
    with pytest.raises(ValueError, match=r"'val_f1' is not in .* choose from \['val_auc'"):
        run_health(client, result.mlflow_run_id, result, metric="val_f1")


def test_the_training_task_alerts_once_on_a_flat_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """flow's training summary carries the findings and sends one
    ``training_unhealthy`` alert (recorded in the store) for the run."""
    from pipeline import flow
    from pipeline.base.alerts import list_alerts

    client, result = _run(
        tmp_path, "flat", "schedule.lr_max=0.0000001", "schedule.lr_min=0.00000001"
    )
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    monkeypatch.delenv("COSINE_RETRAIN_CONFIG", raising=False)
    env = flow.build_env()
    summary = flow.retrain.trained(env, result)
    assert [f.kind for f in summary.health].count("flat_loss") == 1
    flow.retrain.trained(env, result)  # a retried task: still one alert
    alerts = [a for a in list_alerts(env.store) if a.kind == "training_unhealthy"]
    assert len(alerts) == 1
    assert alerts[0].run_key == result.mlflow_run_id
    assert "flat_loss" in alerts[0].title
