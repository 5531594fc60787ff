"""The flow of a retrain: the one API that the DAG tasks and the CLI both call.

Every function takes an :class:`Env` (config, store, spec, MLflow client, built
once at the edge) and explicit keys (a batch id, a plan), and returns a typed
record (ids, URIs, verdicts, figures, never frames): the step's own record as the
step returned it, or one of :mod:`pipeline.flow.records` where the flow composes
one. A DAG task is one call, and a test or a notebook runs the same step without
Airflow. Each step is keyed and safe to re-run: landing the same month again is a
no-op, scoring a batch again reuses its predictions, a retried training task
resumes its own run or returns its finished result, registering twice creates
nothing.

The drift monitor: :func:`validate` -> :func:`drift` -> :func:`score` ->
:func:`decide`, each over every batch of the run (:mod:`pipeline.flow.every`:
:func:`monitor_batches`, :func:`validate_each` ... :func:`decide_all`). The
retrain: :func:`plan_retrain` -> :func:`export_window` ->
:func:`train` (or the GPU pod, :func:`pod_command`, and
:func:`train_result_from_mlflow`) -> :func:`register` -> :func:`gate`. When
labels arrive: :func:`quality` and :func:`review`. What a run was asked to do
(asset events, params, run type): :mod:`pipeline.flow.triggers`.

A lazy map (as :mod:`training.api` is): ``flow.train`` imports the module that
defines it on first use, so a DAG task imports what its own step needs and no
other step's modules.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# each name -> the module that defines it (imported on first use)
_WHERE = {
    "Env": "pipeline.flow.env",
    "build_env": "pipeline.flow.env",
    "batches": "pipeline.flow.landing",
    "check_source": "pipeline.flow.landing",
    "land": "pipeline.flow.landing",
    "reference": "pipeline.flow.landing",
    "source_roots": "pipeline.flow.landing",
    "QualityOutcome": "pipeline.flow.labels",
    "quality": "pipeline.flow.labels",
    "review": "pipeline.flow.labels",
    "BatchValidation": "pipeline.flow.every",
    "decide_all": "pipeline.flow.every",
    "drift_each": "pipeline.flow.every",
    "event_batches": "pipeline.flow.triggers",
    "monitor_batches": "pipeline.flow.every",
    "pending_batches": "pipeline.flow.every",
    "review_batches": "pipeline.flow.every",
    "unreviewed_batches": "pipeline.flow.every",
    "score_each": "pipeline.flow.every",
    "trainable_batches": "pipeline.flow.every",
    "validate_each": "pipeline.flow.every",
    "champion_reference": "pipeline.flow.monitor",
    "decide": "pipeline.flow.monitor",
    "drift": "pipeline.flow.monitor",
    "newest_batch": "pipeline.flow.monitor",
    "score": "pipeline.flow.monitor",
    "validate": "pipeline.flow.monitor",
    "Decision": "pipeline.flow.records",
    "DriftOutcome": "pipeline.flow.records",
    "GateOutcome": "pipeline.flow.records",
    "Plan": "pipeline.flow.records",
    "RetrainRequest": "pipeline.flow.records",
    "ReviewOutcome": "pipeline.flow.records",
    "Trained": "pipeline.flow.records",
    "Window": "pipeline.flow.records",
    "PodCommand": "pipeline.flow.retrain",
    "export_window": "pipeline.flow.retrain",
    "gate": "pipeline.flow.retrain",
    "mlflow_run_url": "pipeline.flow.retrain",
    "plan_retrain": "pipeline.flow.retrain",
    "pod_command": "pipeline.flow.retrain",
    "register": "pipeline.flow.retrain",
    "train": "pipeline.flow.retrain",
    "train_config": "pipeline.flow.retrain",
    "train_result_from_mlflow": "pipeline.flow.retrain",
    "events_from_airflow": "pipeline.flow.triggers",
    "newest_extra": "pipeline.flow.triggers",
    "resolve_request": "pipeline.flow.triggers",
    "Sweep": "pipeline.flow.zone",
    "sweep": "pipeline.flow.zone",
    "Landed": "pipeline.steps.landing.ingest",
    "ValidationSummary": "pipeline.steps.quality.validation",
    "ScoringSummary": "pipeline.steps.canary.routing",
    "Registration": "pipeline.steps.registry.registration",
}

__all__ = [
    "BatchValidation",
    "Decision",
    "DriftOutcome",
    "Env",
    "GateOutcome",
    "Landed",
    "Plan",
    "PodCommand",
    "QualityOutcome",
    "Registration",
    "RetrainRequest",
    "ReviewOutcome",
    "ScoringSummary",
    "Sweep",
    "Trained",
    "ValidationSummary",
    "Window",
    "batches",
    "build_env",
    "champion_reference",
    "check_source",
    "decide",
    "decide_all",
    "drift",
    "drift_each",
    "event_batches",
    "events_from_airflow",
    "export_window",
    "gate",
    "land",
    "mlflow_run_url",
    "monitor_batches",
    "newest_batch",
    "newest_extra",
    "pending_batches",
    "plan_retrain",
    "pod_command",
    "quality",
    "reference",
    "register",
    "resolve_request",
    "review",
    "review_batches",
    "score",
    "score_each",
    "source_roots",
    "sweep",
    "train",
    "train_config",
    "train_result_from_mlflow",
    "trainable_batches",
    "unreviewed_batches",
    "validate",
    "validate_each",
]

if TYPE_CHECKING:
    from pipeline.flow.env import Env, build_env
    from pipeline.flow.every import (
        BatchValidation,
        decide_all,
        drift_each,
        monitor_batches,
        pending_batches,
        review_batches,
        score_each,
        trainable_batches,
        unreviewed_batches,
        validate_each,
    )
    from pipeline.flow.labels import QualityOutcome, quality, review
    from pipeline.flow.landing import batches, check_source, land, reference, source_roots
    from pipeline.flow.monitor import (
        champion_reference,
        decide,
        drift,
        newest_batch,
        score,
        validate,
    )
    from pipeline.flow.records import (
        Decision,
        DriftOutcome,
        GateOutcome,
        Plan,
        RetrainRequest,
        ReviewOutcome,
        Trained,
        Window,
    )
    from pipeline.flow.retrain import (
        PodCommand,
        export_window,
        gate,
        mlflow_run_url,
        plan_retrain,
        pod_command,
        register,
        train,
        train_config,
        train_result_from_mlflow,
    )
    from pipeline.flow.triggers import (
        event_batches,
        events_from_airflow,
        newest_extra,
        resolve_request,
    )
    from pipeline.flow.zone import Sweep, sweep
    from pipeline.steps.canary.routing import ScoringSummary
    from pipeline.steps.landing.ingest import Landed
    from pipeline.steps.quality.validation import ValidationSummary
    from pipeline.steps.registry.registration import Registration


def __getattr__(name: str) -> object:
    # a submodule (``from pipeline.flow import tuning``) is not in the map: the
    # AttributeError lets the import system load it as one
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
