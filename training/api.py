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

# each public name -> the module that defines it
_HOME = {
    "training.config.train": ("ConfigError", "ScheduleConfig", "TrainConfig", "load_config"),
    "training.config.updates": ("cli_overrides", "train_argv", "updated"),
    "training.config.text": ("unknown_field",),
    "training.config.locations": (
        "DEFAULT_HOME",
        "PROJECT_ROOT",
        "artifact_location",
        "code_revision",
        "tracking_uri",
    ),
    "training.engine.run": ("finished", "has_checkpoint", "run_dir", "train"),
    "training.results": (
        "DIVERGED_TAG",
        "REGISTRABLE",
        "CycleBest",
        "CycleEndEvent",
        "CycleHook",
        "ResultError",
        "StoppingSummary",
        "TrainResult",
        "TrainingDiverged",
    ),
    "training.data.spec": (
        "ColumnSpec",
        "DataError",
        "DatasetSpec",
        "categories_as_str",
        "load_spec",
    ),
    "training.data.dataset": ("PreparedData", "prepare_for"),
    "training.data.flights": ("load_months",),
    "training.checkpoint.atomic": ("atomic_copy", "atomic_write_text", "atomic_writer"),
    "training.checkpoint.files": ("CheckpointError",),
    "training.checkpoint.payload": ("BestPayload",),
    "training.engine.metrics": ("log_loss", "roc_auc"),
    "training.engine.distributed": ("DistContext",),
    "training.model.serving": ("Scorer", "as_model_input", "model_signature"),
    "training.telemetry.health": ("Finding", "HealthThresholds", "diagnose"),
    "training.telemetry.pushgateway": ("push_live_quality",),
    "training.schedule": ("CosineSchedule",),
}
_WHERE = {name: module for module, names in _HOME.items() for name in names}

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
