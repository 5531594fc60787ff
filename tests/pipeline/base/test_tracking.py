"""mlflow_uris: MLflow's fluent globals and their environment variables come back."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline.base.store import LocalStore
from pipeline.base.tracking import mlflow_uris
from pipeline.steps.registry.registration import register_training_run
from training.data.spec import load_spec

SPEC = load_spec("configs/datasets/flights.yaml")

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


def test_registering_needs_no_global_tracking_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Airflow task sets no MLFLOW_TRACKING_URI and talks to a SQLite store
    in-process: MLflow's registry store then resolves the logged model through the
    *global* tracking URI (./mlflow.db here); registration must not depend on it."""
    from tests.training.helpers import TINY
    from training.config.train import load_config
    from training.engine.trainer import Trainer

    uri = f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}"
    (tmp_path / "home").mkdir()
    config = load_config(
        None,
        [
            "run_name=r",
            f"output_dir={tmp_path / 'runs'}",
            *TINY,
            "schedule.max_cycles=1",
            f"mlflow.tracking_uri={uri}",
        ],
    )
    run_id = Trainer(config).run().mlflow_run_id
    for k in KEYS:
        monkeypatch.delenv(k, raising=False)
    mlflow.set_tracking_uri(None)
    monkeypatch.chdir(tmp_path)
    store = LocalStore(tmp_path / "store")
    reg = register_training_run(MlflowClient(uri), store, SPEC, run_id, name="m", ensemble=False)
    assert len(reg.versions) == 1
    assert not (tmp_path / "mlflow.db").exists()
    assert [os.environ.get(k) for k in KEYS] == [None, None, None]
