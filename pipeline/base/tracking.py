"""MLflow as the pipeline sees it: where it is, the client, the names in it.

The tracking URI is resolved here and only here (through
:func:`training.config.locations.tracking_uri`, which the training job uses too):
``mlflow.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else
``sqlite:///<home>/mlflow.db``. Clients are built once, at the edge, and passed
in; MLflow's process-global ("fluent") state is set only for the block that
needs it (:func:`mlflow_uris`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from training import api

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipeline.base.config import PipelineConfig
    from training.api import DatasetSpec

__all__ = [
    "artifact_location",
    "build_client",
    "experiment_name",
    "mlflow_uris",
    "model_name",
    "tracking_uri",
    "ui_url",
]

LOCAL_UI = "http://127.0.0.1:5000"  # what ./run ui starts


def tracking_uri(config: PipelineConfig) -> str:
    """``mlflow.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else the home's SQLite file."""
    return api.tracking_uri(config.mlflow.tracking_uri, config.home)


def artifact_location(config: PipelineConfig) -> str | None:
    """Artifact root of the experiments the pipeline creates: ``mlflow.artifact_location``,
    else ``<home>/mlartifacts`` on a database-backed store (a server keeps its own)."""
    return api.artifact_location(config.mlflow.artifact_location, tracking_uri(config), config.home)


def build_client(config: PipelineConfig) -> MlflowClient:
    from mlflow import MlflowClient

    uri = tracking_uri(config)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def model_name(config: PipelineConfig, spec: DatasetSpec) -> str:
    """The registered model: ``mlflow.model_name``, else the spec's ``model_name``."""
    return config.mlflow.model_name or spec.model_name


def experiment_name(config: PipelineConfig, spec: DatasetSpec) -> str:
    """The experiment training runs go to: ``mlflow.experiment``, else the model name."""
    return config.mlflow.experiment or model_name(config, spec)


def ui_url(config: PipelineConfig) -> str:
    """The MLflow UI for links: ``mlflow.ui_url``, else an http(s) tracking URI, else
    the local UI of ``./run ui``."""
    if config.mlflow.ui_url:
        return config.mlflow.ui_url.rstrip("/")
    uri = tracking_uri(config)
    return (uri if uri.startswith(("http://", "https://")) else LOCAL_UI).rstrip("/")


@contextlib.contextmanager
def mlflow_uris(uri: str, experiment_id: str | None = None) -> Iterator[None]:
    """MLflow's fluent API pointed at ``uri`` for a block, then put back as it was.

    ``mlflow.set_tracking_uri`` and ``set_experiment`` also write
    ``MLFLOW_TRACKING_URI``/``MLFLOW_EXPERIMENT_ID`` into the environment; left
    there, they would follow the process into every later step and subprocess.
    """
    import mlflow
    from mlflow.tracking import fluent
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_ID")
    saved_env = {k: os.environ.get(k) for k in keys}
    # the globals themselves (None when unset), not get_tracking_uri()'s resolved default
    saved = (
        tracking_utils._tracking_uri,
        registry_utils._registry_uri,
        fluent._active_experiment_id,
    )
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        if experiment_id is not None:
            mlflow.set_experiment(experiment_id=experiment_id)
        yield
    finally:
        mlflow.set_tracking_uri(saved[0])  # None unsets
        registry_utils._registry_uri = saved[1]
        fluent._active_experiment_id = saved[2]
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
