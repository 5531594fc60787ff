"""Telemetry against a real MLflow tracking server (subprocess on 127.0.0.1)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from tests.support import MlflowServer
from tests.training.helpers import TINY_SCHEDULE
from training.config.train import TrainConfig
from training.engine.trainer import Trainer

Tiny = Callable[..., TrainConfig]


@pytest.fixture(scope="module")
def logged(mlflow_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny run logged to the server; counts the client's calls on the way."""
    from tests.training.helpers import TINY
    from training.config.train import load_config

    out = tmp_path_factory.mktemp("runs")
    config = load_config(
        None,
        [
            "run_name=logged",
            f"output_dir={out}",
            f"mlflow.tracking_uri={mlflow_server.url}",
            "mlflow.experiment=telemetry-test",
            "fault_injection.nan_steps=[33]",
            *TINY,
        ],
    )
    # the server's access log counts what the client sent (the client runs in another process)
    before = mlflow_server.log.read_text().splitlines()
    result = Trainer(config).run()
    after = mlflow_server.log.read_text().splitlines()[len(before) :]
    calls = {
        "log_batch": sum("/runs/log-batch " in line for line in after),
        "log_metric": sum("/runs/log-metric " in line for line in after),
    }
    return {"result": result, "calls": calls, "client": MlflowClient(mlflow_server.url)}


def _history(logged: dict[str, Any], key: str) -> list[Any]:
    client: MlflowClient = logged["client"]
    return sorted(
        client.get_metric_history(logged["result"].mlflow_run_id, key), key=lambda m: m.step
    )


def test_logged_lr_equals_the_schedule_at_every_step(logged: dict[str, Any]) -> None:
    history = _history(logged, "lr")
    assert [m.step for m in history] == list(range(100))
    for m in history:
        assert m.value == pytest.approx(TINY_SCHEDULE.lr_at(m.step), rel=1e-12, abs=0)


def test_every_step_has_loss_grad_norm_and_nan_count(logged: dict[str, Any]) -> None:
    for key in ("train_loss", "grad_norm", "nan_count"):
        assert [m.step for m in _history(logged, key)] == list(range(100)), key
    nan_count = {m.step: m.value for m in _history(logged, "nan_count")}
    assert nan_count[32] == 0
    assert nan_count[33] == 1
    assert nan_count[99] == 1
    losses = {m.step: m.value for m in _history(logged, "train_loss")}
    assert math.isnan(losses[33])
    assert all(math.isfinite(v) for s, v in losses.items() if s != 33)


def test_validation_at_every_evaluation_and_cycle_end(logged: dict[str, Any]) -> None:
    steps = {m.step for m in _history(logged, "val_auc")}
    assert {9, 19, 29, 39, 49, 59, 69, 79, 89, 99} <= steps  # every 10 steps
    assert set(TINY_SCHEDULE.cycle_end_steps()) <= steps  # 24, 54, 99
    assert {m.step for m in _history(logged, "val_loss")} == steps
    assert len(_history(logged, "cost_usd")) == 1
    assert _history(logged, "cost_usd")[0].value > 0


def test_metrics_go_in_batches_not_one_call_per_value(logged: dict[str, Any]) -> None:
    calls = logged["calls"]
    assert calls["log_metric"] == 0
    # 100 steps x 4 values + evaluations (~450 values): one call per checkpoint (every
    # 10 steps), plus the params and a few tag updates
    assert 5 <= calls["log_batch"] <= 25, calls


def test_params_tags_and_artifacts(logged: dict[str, Any]) -> None:
    client: MlflowClient = logged["client"]
    run = client.get_run(logged["result"].mlflow_run_id)
    params = run.data.params
    assert params["schedule.cycle_steps"] == "20"
    assert params["schedule.cycle_mult"] == "1.5"
    assert params["schedule.peak_decay"] == "0.8"
    assert params["schedule.warmup_steps"] == "5"
    assert params["schedule.total_steps"] == "100"
    assert params["optim.batch_size"] == "128"
    tags = run.data.tags
    assert tags["status"] == "completed"
    assert tags["nan_count"] == "1"
    assert tags["dataset"] == "flights"
    assert len(tags["schedule_fingerprint"]) == 16
    assert run.info.status == "FINISHED"
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"curves.png", "result.json", "config.resolved.json", "checkpoints"} <= names
    ckpts = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert ckpts == {"best-cycle-00.ckpt", "best-cycle-01.ckpt", "best-cycle-02.ckpt"}
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "telemetry-test"


def test_progress_is_reported_without_a_terminal(
    tiny: Tiny, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="training")
    Trainer(tiny()).run()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert any("step 100/100 (100%)" in line for line in lines)
    assert 5 <= len(lines) <= 12  # about every 10 %, not every step
