"""A home with labelled loans batches (not flights) and a tiny training config in
epochs, for the tuner's tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.base.config import load_config
from pipeline.flow import Env
from pipeline.flow.tuning import export_batches
from pipeline.steps.landing.ingest import ingest_frame
from pipeline.steps.landing.labels import ingest_labels
from tests.pipeline import loans
from tests.pipeline.cli_support import clear_pipeline_env
from training import api

MONTHS = ["2024-01", "2024-02", "2024-03", "2024-04"]

# the shipped-config stand-in: lengths in epochs (what the tuner searches), a small model
TRAIN_YAML = """\
model:
  hidden: [16]
optim:
  batch_size: 128
schedule:
  lr_max: {lr_max}
  lr_min: {lr_min}
  cycle_epochs: 1.0
  warmup_epochs: 0.2
  restart_warmup_epochs: 0.1
  cycle_mult: 1.5
  max_cycles: 3
  min_cycle_steps: 4
eval:
  every_steps: 4
checkpoint:
  every_steps: 4
runtime:
  threads: 1
"""

SPACE = {
    "schedule.lr_max": {"low": 3e-3, "high": 3e-2, "log": True},
    "schedule.cycle_epochs": {"low": 1.0, "high": 2.0},
    "schedule.cycle_mult": {"low": 1.0, "high": 1.5},
    "schedule.peak_decay": {"low": 0.6, "high": 1.0},
    "optim.weight_decay": {"low": 1e-6, "high": 1e-3, "log": True},
    "schedule.warmup_epochs": {"low": 0.1, "high": 0.3},
}

# the start config's peak (0.01) outside: no incumbent trial, trial 0 is TPE's own draw
SPACE_WITHOUT_START = {**SPACE, "schedule.lr_max": {"low": 0.012, "high": 0.03, "log": True}}


def labels_for(features: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Defaults that depend on income, term and purpose (a model can learn them)."""
    rng = np.random.default_rng(seed + 100)
    income = np.log(features["income"].fillna(features["income"].median()))
    z = (
        -0.5
        - 1.5 * (income - income.mean()) / income.std()
        + 0.04 * (features["term_months"] - 36)
        + 1.0 * (features["purpose"] == "study")
    )
    p = 1 / (1 + np.exp(-z.to_numpy()))
    return pd.DataFrame(
        {"application_id": features["application_id"], "defaulted": rng.random(len(p)) < p}
    ).astype({"defaulted": int})


def write_train_yaml(path: Path, lr_max: float = 0.01) -> Path:
    # lr_min within fp16's resolution of any peak the space holds (no underflow warning)
    lr_min = 2e-5 if lr_max >= 5e-3 else lr_max / 1000
    path.write_text(TRAIN_YAML.format(lr_max=lr_max, lr_min=lr_min))
    return path


def make_env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    tracking_uri: str | None = None,
    shipped_lr: float = 0.01,
    rows: int = 500,
    **tune: object,
) -> Env:
    clear_pipeline_env(monkeypatch, "MLFLOW_")
    home = tmp_path / "home"
    spec_path = loans.write_spec(tmp_path / "loans.yaml")
    overrides: dict[str, object] = {
        "home": home,
        "dataset_spec": spec_path,
        "retrain": {"train_config": write_train_yaml(tmp_path / "train.yaml", shipped_lr)},
        "tune": {"space": SPACE, "window_batches": 2, "holdout_batches": 2, **tune},
    }
    if tracking_uri:
        overrides["mlflow"] = {"tracking_uri": tracking_uri}
    env = Env(load_config(**overrides))  # type: ignore[arg-type]
    for i, month in enumerate(MONTHS):
        features = loans.batch(month, rows, seed=i)
        ingest_frame(env.store, env.spec, features, month)
        ingest_labels(env.store, env.spec, labels_for(features, i), month)
    return env


def study_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, Any]]:
    """What ``tune`` hands ``run_study`` for a home made by ``make_env``: the start config
    and the updates that point it at the first two batches (MLflow off)."""
    env = make_env(tmp_path, monkeypatch)
    base = api.load_config(tmp_path / "train.yaml")
    updates = {**export_batches(env, ["2024-01", "2024-02"], "w"), "mlflow.enabled": False}
    return base, updates
