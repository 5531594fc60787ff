"""What the retrain flow's config tests build: a plan, its window, the flow's Env."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline import flow
from pipeline.flow.env import Env
from pipeline.flow.records import BatchVersions, Plan, Window
from pipeline.flow.retrain import gate
from pipeline.steps.registry.registration import register_training_run


def plan() -> Plan:
    """A manual retrain on batch ``b1`` (features and labels v1)."""
    return Plan(
        trigger="manual",
        reasons=["a test"],
        window=["b1"],
        skip=False,
        reason="",
        versions={"b1": BatchVersions(features=1, labels=1)},
        run_name="retrain-b1-0123abcd",
    )


def window(tmp_path: Path) -> Window:
    """The plan's window, 10 rows, as local files and as their S3 exports."""
    return Window(
        features=str(tmp_path / "f.parquet"),
        labels=str(tmp_path / "l.parquet"),
        rows=10,
        features_uri="s3://bucket/exports/f.parquet",
        labels_uri="s3://bucket/exports/l.parquet",
    )


def retrain_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: str) -> flow.Env:
    """The flow's Env with its home in ``tmp_path`` and ``settings`` as environment
    variables (no config file, no ``MLFLOW_TRACKING_URI`` of the machine's)."""
    monkeypatch.delenv("COSINE_RETRAIN_CONFIG", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    return flow.build_env()


def register_and_gate(env: Env, trained_runs: Any) -> list[str]:
    """Register the best of training runs a and b, in that order, each through the
    flow's gate (which must pass): their versions, a's first."""
    versions = []
    for label in ("a", "b"):
        run_id = trained_runs[label].run_id
        reg = register_training_run(env.client, env.store, env.spec, run_id, name=env.model)
        assert gate(env, reg).passed
        versions.append(reg.challenger.version)
    return versions
