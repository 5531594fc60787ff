"""Training health of a finished run, read back from MLflow.

The trainer logs ``train_loss`` every step; this module reads that history (the
same for the local and the Kubernetes backend), rebuilds the run's cycle starts
from its schedule, runs :func:`training.telemetry.health.diagnose`, tags the MLflow run
(``cosine_retrain.health`` = ``ok`` or the finding kinds, one
``cosine_retrain.health.<kind>`` tag per finding with its message) and returns
the findings so the caller can send one ``training_unhealthy`` alert.
"""

from __future__ import annotations

import logging

from mlflow import MlflowClient

from training.api import CosineSchedule, Finding, HealthThresholds, TrainResult, diagnose

__all__ = ["HEALTH_TAG", "run_health"]

log = logging.getLogger(__name__)

HEALTH_TAG = "cosine_retrain.health"


def run_health(
    client: MlflowClient,
    run_id: str,
    result: TrainResult,
    *,
    metric: str = "val_auc",
    thresholds: HealthThresholds | None = None,
) -> list[Finding]:
    """Findings for one run (``result``: the job's result)."""
    history = client.get_metric_history(run_id, "train_loss")
    losses = [(m.step, float(m.value)) for m in history]
    schedule = CosineSchedule(**result.schedule, restarts=tuple(result.restarts))
    finals = result.finals
    known = ["val_auc", "val_loss"]
    if metric not in known:
        raise ValueError(f"metric {metric!r} is not in the run's cycle bests; choose from {known}")
    starts = [schedule.cycle_start_step(c.cycle) for c in finals if c.cycle > 0]
    bests = [(c.cycle, c.step, c.metric(metric)) for c in finals]
    findings = diagnose(
        losses,
        starts,
        bests,
        warmup_steps=schedule.warmup_steps,
        higher_is_better=metric != "val_loss",
        metric=metric,
        thresholds=thresholds,
        stopped_cycles=result.stopping.losing_cycles if result.stopping else (),
    )
    tags = {HEALTH_TAG: ",".join(sorted({f.kind for f in findings})) or "ok"}
    for f in findings:
        tags.setdefault(f"{HEALTH_TAG}.{f.kind}", f.message[:500])
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    if findings:
        log.warning("training run %s: %s", run_id, "; ".join(f.message for f in findings))
    return list(findings)
