"""The flow of a retrain: the one API that the DAG tasks and the CLI both call.

Every function takes an :class:`Env` (config, store, spec, MLflow client, built
once at the edge) and explicit keys (a batch id, a plan), and returns a typed
record of :mod:`pipeline.flow.records` (ids, URIs, verdicts, figures, never
frames), so a DAG task is one call and a test or a notebook runs the same step
without Airflow. Each step is keyed and safe to re-run: landing the same month
again is a no-op, scoring a batch again reuses its predictions, a retried
training task resumes its own run or returns its finished result, registering
twice creates nothing.

The drift monitor: :func:`validate` -> :func:`drift` -> :func:`score` ->
:func:`decide`. The retrain: :func:`plan_retrain` -> :func:`export_window` ->
:func:`train` (or the GPU pod, :func:`pod_command`, and
:func:`train_result_from_mlflow`) -> :func:`register` -> :func:`gate`. When
labels arrive: :func:`quality` and :func:`review`. What a run was asked to do
(asset events, params, run type): :mod:`pipeline.flow.triggers`.
"""

from __future__ import annotations

from pipeline.flow.env import Env, build_env
from pipeline.flow.labels import quality, review
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
    Landed,
    Plan,
    QualityOutcome,
    Registered,
    RetrainRequest,
    ReviewOutcome,
    Scored,
    TrainSummary,
    Validated,
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
from pipeline.flow.triggers import events_from_airflow, newest_extra, resolve_request

__all__ = [
    "Decision",
    "DriftOutcome",
    "Env",
    "GateOutcome",
    "Landed",
    "Plan",
    "PodCommand",
    "QualityOutcome",
    "Registered",
    "RetrainRequest",
    "ReviewOutcome",
    "Scored",
    "TrainSummary",
    "Validated",
    "Window",
    "batches",
    "build_env",
    "champion_reference",
    "check_source",
    "decide",
    "drift",
    "events_from_airflow",
    "export_window",
    "gate",
    "land",
    "mlflow_run_url",
    "newest_batch",
    "newest_extra",
    "plan_retrain",
    "pod_command",
    "quality",
    "reference",
    "register",
    "resolve_request",
    "review",
    "score",
    "source_roots",
    "train",
    "train_config",
    "train_result_from_mlflow",
    "validate",
]
