"""The environment of a flow step: config, store, dataset spec and MLflow client.

Built once at the edge (a DAG task, a CLI command, a test) and passed to every
step; each part is created on first use, so a step that needs no MLflow never
connects to it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.base import tracking
from pipeline.base.config import PipelineConfig, load_config, resolve_path
from pipeline.base.store import ObjectStore, build_store
from training.api import DatasetSpec, load_spec

if TYPE_CHECKING:
    from mlflow import MlflowClient  # built by pipeline.base.tracking on first use

__all__ = ["Env", "build_env"]


@dataclass
class Env:
    config: PipelineConfig

    @functools.cached_property
    def store(self) -> ObjectStore:
        return build_store(self.config)

    @functools.cached_property
    def spec(self) -> DatasetSpec:
        return load_spec(resolve_path(self.config.dataset_spec))

    @functools.cached_property
    def client(self) -> MlflowClient:
        return tracking.build_client(self.config)

    @property
    def model(self) -> str:
        """The registered model's name."""
        return tracking.model_name(self.config, self.spec)

    @property
    def dataset(self) -> str:
        return self.spec.name

    @property
    def experiment(self) -> str:
        """The MLflow experiment training runs go to."""
        return tracking.experiment_name(self.config, self.spec)

    @property
    def home(self) -> Path:
        """The local state folder, absolute."""
        return resolve_path(self.config.home).resolve()


def build_env(config_path: str | None = None) -> Env:
    """The environment of a DAG task or a command: config from the file
    (``config_path`` or ``$COSINE_RETRAIN_CONFIG``) and ``COSINE_RETRAIN_*``."""
    return Env(load_config(config_path))
