"""The training job's one door: every name the pipeline (or a notebook) uses of it.

In process (the pipeline's local backend, a notebook, a test)::

    from training import api

    config = api.updated(api.load_config("configs/flights.yaml"), {"run_name": "jan-mar"})
    result = api.train(config)                 # -> TrainResult
    result = api.TrainResult.load(api.run_dir(config))

Across a process boundary (the command line, the GPU pod, torchrun) the same typed
config travels as ``--set KEY=VALUE`` arguments: :func:`cli_overrides` produces them
and :func:`load_config` is the one parser (:mod:`training.config.updates`).

A lazy map, as ``airflow.sdk`` is: ``from training.api import DatasetSpec`` imports
the module that defines it on first use and nothing else, so the door costs nothing
to a DAG file or a task that needs one name (torch comes with the names that need
it: :func:`train`, :class:`Scorer`...). The pipeline
imports nothing of training/ but this module (.importlinter, "One door").
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# each public name -> the module that defines it (imported on first use)
_WHERE = {
    "ConfigError": "training.config.text",
    "ScheduleConfig": "training.config.schedule",
    "TrainConfig": "training.config.train",
    "load_config": "training.config.train",
    "cli_overrides": "training.config.updates",
    "train_argv": "training.config.updates",
    "updated": "training.config.updates",
    "unknown_field": "training.config.text",
    "DEFAULT_HOME": "training.config.locations",
    "PROJECT_ROOT": "training.config.locations",
    "artifact_location": "training.config.locations",
    "code_revision": "training.config.locations",
    "tracking_uri": "training.config.locations",
    "finished": "training.engine.run",
    "has_checkpoint": "training.engine.run",
    "run_dir": "training.engine.run",
    "train": "training.engine.run",
    "DIVERGED_TAG": "training.results",
    "REGISTRABLE": "training.results",
    "CycleBest": "training.results",
    "CycleEndEvent": "training.results",
    "CycleHook": "training.results",
    "ResultError": "training.results",
    "StoppingSummary": "training.results",
    "TrainResult": "training.results",
    "TrainingDiverged": "training.results",
    "BATCH_COLUMN": "training.data.spec",
    "ColumnSpec": "training.data.spec",
    "DataError": "training.data.spec",
    "DatasetSpec": "training.data.spec",
    "categories_as_str": "training.data.spec",
    "load_spec": "training.data.spec",
    "PreparedData": "training.data.dataset",
    "join_labels": "training.data.dataset",
    "WindowIds": "training.data.dataset",
    "open_for": "training.data.dataset",
    "prepare_for": "training.data.dataset",
    "ROW_GROUP_ROWS": "training.data.sources",
    "StreamedData": "training.data.stream",
    "load_months": "training.data.flights",
    "atomic_copy": "training.checkpoint.atomic",
    "atomic_write_text": "training.checkpoint.atomic",
    "atomic_writer": "training.checkpoint.atomic",
    "CheckpointError": "training.checkpoint.files",
    "BestPayload": "training.checkpoint.payload",
    "log_loss": "training.engine.metrics",
    "roc_auc": "training.engine.metrics",
    "DistContext": "training.engine.distributed",
    "Scorer": "training.model.serving",
    "as_model_input": "training.model.serving",
    "model_signature": "training.model.serving",
    "Finding": "training.telemetry.health",
    "HealthThresholds": "training.telemetry.health",
    "diagnose": "training.telemetry.health",
    "push_live_quality": "training.telemetry.pushgateway",
    "CosineSchedule": "training.schedule",
}

__all__ = sorted(_WHERE)

if TYPE_CHECKING:
    pass


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
