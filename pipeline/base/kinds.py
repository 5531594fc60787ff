"""The pipeline's vocabularies, importing nothing themselves: the kinds of alert it
sends (the config validates ``alerts.kinds`` against them; the alert package builds
on them) and the triggers of a retrain."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args

__all__ = ["TRIGGERS", "AlertKind", "Trigger"]

# what asks for a retrain: drift or live quality (an asset event), the cron, a person
Trigger = Literal["drift", "quality", "scheduled", "manual"]
TRIGGERS: tuple[Trigger, ...] = get_args(Trigger)


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
    ALIAS_OUTSIDE = "alias_moved_outside"
    SPEND = "spend_paused"
    TASK_FAILED = "task_failed"
    TRAINING = "training_unhealthy"
