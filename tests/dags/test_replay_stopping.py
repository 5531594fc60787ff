"""Cycle-aware stopping from the DAGs: the README's main job (``python -m pipeline demo``,
months replayed through the real DAGs with ``dag.test()``) with a small training config
whose rule stops after cycle 1 (no later cycle can win by 0.5 AUC)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from mlflow import MlflowClient

from tests.support import TINY_REPLAY_ENV

ROOT = Path(__file__).resolve().parents[2]


def test_the_retrain_dag_stops_after_the_cycle_and_the_month_summary_says_so(
    tmp_path: Path,
) -> None:
    config = yaml.safe_load((ROOT / "tests" / "fixtures" / "tiny_train.yaml").read_text())
    config["stopping"] = {"enabled": True, "min_delta": 0.5, "patience": 1}
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    home = tmp_path / "home"
    env = {**os.environ, **TINY_REPLAY_ENV, "COSINE_RETRAIN_RETRAIN__TRAIN_CONFIG": str(path)}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "demo", "--months", "1-2", "--home", str(home)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    # tiny_train.yaml: W=5, T0=20, m=1.5, 3 cycles: cycle 1 ends at step 54 of 100
    assert "cycle 1 best at step" in out
    assert "cycle 2 best" not in out
    assert "             stopped after cycle 1 at step 54: 45 of 100 steps ($" in out
    months = json.loads((home / "reports" / "replay.json").read_text())
    assert months[1]["stopped_after_cycle"] == 1
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    (run,) = client.search_runs(
        [client.get_experiment_by_name("flight_delay").experiment_id],
        "attributes.run_name LIKE 'retrain-%'",
    )
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "lr")) == 55
    assert run.data.tags["stopping.stopped"] == "true"
    assert run.data.metrics["stopping_steps_saved"] == 45.0
    assert "checkpoint_regression" not in run.data.tags["cosine_retrain.health"]
    # only the two cycles that ran became versions
    versions = client.search_model_versions("name='flight_delay'")
    cycles = sorted(int(v.tags["cycle"]) for v in versions if v.tags.get("kind") == "cycle_best")
    assert cycles == [0, 1]
