"""The kinds of alert the pipeline sends: a vocabulary the config validates against
(``alerts.kinds``) and the alert package builds on, importing nothing itself."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["AlertKind"]


class AlertKind(StrEnum):
    NAN = "nan_detected"
    COST = "cost_over_budget"
    VALIDATION = "validation_failed"
    DRIFT = "drift_detected"
    GATE = "gate_failed"
    ROLLBACK = "canary_rolled_back"
    PROMOTED = "promoted"
    CANARY_UNDECIDED = "canary_needs_decision"
    APPROVAL_TIMEOUT = "approval_timed_out"
    SPEND = "spend_paused"
    TASK_FAILED = "task_failed"
    TRAINING = "training_unhealthy"
