"""Cycle-aware stopping as the retrain DAG runs it: the config the DAG's tasks build
(local and pod), the flow's summary of a stopped run, its health check, and the
demo's month summary line."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from pipeline import flow
from pipeline.apps.summary import retrain_lines
from pipeline.base.config import resolve_path
from pipeline.flow.retrain import pod_command, train_config
from pipeline.steps.registry.health import run_health
from tests.pipeline.flow.retrain_support import plan, retrain_env, window
from tests.training.helpers import TINY
from training.cli.main import build_parser, config_from_args
from training.config.train import load_config
from training.engine.trainer import Trainer
from training.results import TrainResult

STOP = ["stopping.enabled=true", "stopping.min_delta=0.5", "stopping.patience=1"]


def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train_config_file: Path) -> flow.Env:
    return retrain_env(
        tmp_path, monkeypatch, COSINE_RETRAIN_RETRAIN__TRAIN_CONFIG=str(train_config_file)
    )


def test_the_dags_training_config_carries_the_rule_to_the_local_job_and_the_pod(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = yaml.safe_load(Path(resolve_path(Path("configs/flights.yaml"))).read_text())
    shipped["stopping"] = {"enabled": True, "min_delta": 0.002, "patience": 2}
    shipped["schedule"]["max_cycles"] = 4  # patience 2 can stop a run of 4 cycles, not of 3
    own = tmp_path / "train.yaml"
    own.write_text(yaml.safe_dump(shipped))
    env = _env(tmp_path, monkeypatch, own)
    local = train_config(env, plan(), window(tmp_path)).stopping
    assert (local.enabled, local.min_delta, local.patience) == (True, 0.002, 2)
    # the pod mounts the same file and gets the differences as --set: read back as the
    # job's own command line reads them
    pod = pod_command(env, plan(), window(tmp_path), config_path=str(own))
    remote = config_from_args(build_parser().parse_args(pod.arguments)).stopping
    assert remote == local


@pytest.fixture(scope="module")
def stopped(mlflow_server: Any, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    out = tmp_path_factory.mktemp("runs")
    config = load_config(
        None,
        [
            "run_name=stopped",
            f"output_dir={out}",
            f"mlflow.tracking_uri={mlflow_server.url}",
            *TINY,
            *STOP,
        ],
    )
    return Trainer(config).run()


def test_the_flow_summarizes_a_stopped_run_and_the_month_summary_says_so(
    stopped: TrainResult, mlflow_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _env(tmp_path, monkeypatch, Path(resolve_path(Path("configs/flights.yaml"))))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    summary = flow.retrain.trained(flow.build_env(), stopped)
    stopping = summary.result.stopping
    assert stopping is not None
    assert (stopping.stopped_after_cycle, stopping.steps_saved) == (1, 45)
    assert all(f.kind != "checkpoint_regression" for f in summary.health)
    out = SimpleNamespace(lines=[], steps={}, batch="2013-04")
    run = SimpleNamespace(
        results={
            "plan": {"run_name": "stopped", "window": ["2013-04"], "reasons": ["a test"]},
            "train": summary.to_xcom(),  # what the train task returns (JSON)
            "gate": {"first_model": True, "version": "1"},
        },
        consumed=1,
        failed=False,
        state="success",
    )
    retrain_lines(SimpleNamespace(retrains=[]), out, run)
    usd = stopped.stopping.usd_saved  # type: ignore[union-attr]
    line = f"stopped after cycle 1 at step 54: 45 of 100 steps (${usd:.4f}) saved"
    assert [x.strip() for x in out.lines if "stopped after" in x] == [line]
    assert out.steps["stopped_after_cycle"] == 1


def test_the_health_check_excuses_only_the_cycles_that_stopped_the_run(
    stopped: TrainResult, mlflow_server: Any
) -> None:
    """Cycle 1 made 0.02 worse than cycle 0: a checkpoint regression for a run that ran
    on, none for the run the rule stopped because of it."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server.url)
    c0, c1 = stopped.cycles
    worse = dataclasses.replace(c1, val_auc=c0.val_auc - 0.02)
    regressed = dataclasses.replace(stopped, cycles=[c0, worse])
    run_id = str(stopped.mlflow_run_id)
    assert run_health(client, run_id, regressed) == []
    ran_on = dataclasses.replace(regressed, stopping=None)
    assert [f.kind for f in run_health(client, run_id, ran_on)] == ["checkpoint_regression"]
