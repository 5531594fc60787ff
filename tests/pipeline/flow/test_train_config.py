"""The training job's config as the retrain DAG builds it (``flow.retrain``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.base.config import resolve_path
from pipeline.flow.retrain import pod_command, train_config
from tests.pipeline.flow.retrain_support import plan, retrain_env, window
from training.cli.main import build_parser, config_from_args


def test_the_pipelines_artifact_location_reaches_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mlflow.artifact_location`` was read by nothing before; now the local run and
    the pod's arguments both carry it (the job creates its experiment there)."""
    where = "s3://team-artifacts/mlflow"
    env = retrain_env(tmp_path, monkeypatch, COSINE_RETRAIN_MLFLOW__ARTIFACT_LOCATION=where)
    assert train_config(env, plan(), window(tmp_path)).mlflow.artifact_location == where
    shipped = str(resolve_path(env.config.retrain.train_config))
    pod = pod_command(env, plan(), window(tmp_path), config_path=shipped)
    # the pod's arguments, read back as the job's own command line reads them
    args = build_parser().parse_args(pod.arguments)
    assert config_from_args(args).mlflow.artifact_location == where


def test_unset_it_is_the_homes_folder_for_a_database_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = retrain_env(tmp_path, monkeypatch)
    config = train_config(env, plan(), window(tmp_path))
    assert config.mlflow.artifact_location == (tmp_path / "home" / "mlartifacts").as_uri()
    served = retrain_env(
        tmp_path, monkeypatch, COSINE_RETRAIN_MLFLOW__TRACKING_URI="http://127.0.0.1:5000"
    )
    # a tracking server keeps its own artifact root
    assert train_config(served, plan(), window(tmp_path)).mlflow.artifact_location is None
