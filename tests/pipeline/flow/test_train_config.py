"""The training job's config as the retrain DAG builds it (``flow.retrain``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import flow
from pipeline.base.config import resolve_path
from pipeline.flow.records import BatchVersions, Plan, Window
from pipeline.flow.retrain import pod_command, train_config
from training.cli import _load_train_config, build_parser


def _plan() -> Plan:
    return Plan(
        trigger="manual",
        reasons=["a test"],
        window=["b1"],
        skip=False,
        reason="",
        versions={"b1": BatchVersions(features=1, labels=1)},
        run_name="retrain-b1-0123abcd",
    )


def _window(tmp_path: Path) -> Window:
    return Window(
        features=str(tmp_path / "f.parquet"),
        labels=str(tmp_path / "l.parquet"),
        rows=10,
        features_uri="s3://bucket/exports/f.parquet",
        labels_uri="s3://bucket/exports/l.parquet",
    )


def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **settings: str) -> flow.Env:
    monkeypatch.delenv("COSINE_RETRAIN_CONFIG", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    return flow.build_env()


def test_the_pipelines_artifact_location_reaches_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mlflow.artifact_location`` was read by nothing before; now the local run and
    the pod's arguments both carry it (the job creates its experiment there)."""
    where = "s3://team-artifacts/mlflow"
    env = _env(tmp_path, monkeypatch, COSINE_RETRAIN_MLFLOW__ARTIFACT_LOCATION=where)
    assert train_config(env, _plan(), _window(tmp_path)).mlflow.artifact_location == where
    shipped = str(resolve_path(env.config.retrain.train_config))
    pod = pod_command(env, _plan(), _window(tmp_path), config_path=shipped)
    # the pod's arguments, read back as the job's own command line reads them
    args = build_parser().parse_args(pod.arguments)
    assert _load_train_config(args).mlflow.artifact_location == where


def test_unset_it_is_the_homes_folder_for_a_database_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _env(tmp_path, monkeypatch)
    config = train_config(env, _plan(), _window(tmp_path))
    assert config.mlflow.artifact_location == (tmp_path / "home" / "mlartifacts").as_uri()
    served = _env(
        tmp_path, monkeypatch, COSINE_RETRAIN_MLFLOW__TRACKING_URI="http://127.0.0.1:5000"
    )
    # a tracking server keeps its own artifact root
    assert train_config(served, _plan(), _window(tmp_path)).mlflow.artifact_location is None
