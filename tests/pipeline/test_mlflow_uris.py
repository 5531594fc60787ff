"""mlflow_uris: MLflow's fluent globals and their environment variables come back."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest

from pipeline.registry import mlflow_uris

KEYS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")


def test_nothing_set_before_nothing_set_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in KEYS:
        monkeypatch.delenv(k, raising=False)
    uri = f"sqlite:///{tmp_path / 'a.db'}"
    experiment = mlflow.MlflowClient(uri).create_experiment("e")
    with mlflow_uris(uri, experiment):
        assert mlflow.get_tracking_uri() == uri
        assert os.environ["MLFLOW_EXPERIMENT_ID"] == experiment
    assert [os.environ.get(k) for k in KEYS] == [None, None, None]
    # the environment decides again (what a later step or subprocess would see)
    other = f"sqlite:///{tmp_path / 'b.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    assert mlflow.get_tracking_uri() == other


def test_a_previous_setting_is_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = f"sqlite:///{tmp_path / 'before.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", before)
    with pytest.raises(RuntimeError), mlflow_uris(f"sqlite:///{tmp_path / 'x.db'}"):
        raise RuntimeError("a failed registration")
    assert os.environ["MLFLOW_TRACKING_URI"] == before
    assert mlflow.get_tracking_uri() == before
