"""The NaN guard: count non-finite steps, and decide when to roll the run back.

A non-finite step is skipped where it happens (:mod:`training.engine.loop`); this counts
them once per window, when the window's values reach the host, and records each
step's telemetry. ``nan_guard.max_consecutive`` bad steps in a row ask for a
rollback: the run returns to its last good checkpoint with the peak rate lowered
by ``rollback_factor``, at most ``max_rollbacks`` times; after that the run has
diverged (:class:`TrainingDiverged`, exit 1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from training.engine.loop import StepRecord
from training.results import DIVERGED_TAG, TrainingDiverged

if TYPE_CHECKING:
    from training.config.train import NanGuardConfig

__all__ = ["DIVERGED_TAG", "LoopState", "NanGuard", "TrainingDiverged", "diverged_tags"]


def diverged_tags(exc: TrainingDiverged, state: LoopState) -> dict[str, str]:
    """The MLflow tags a diverged run ends with (read back by the pipeline)."""
    return {
        DIVERGED_TAG: "diverged",
        "failure.reason": str(exc)[:1000],
        "failure.step": str(state.step),
        "failure.nan_count": str(state.nan_total),
        "failure.rollbacks": str(state.rollbacks),
    }


@dataclass
class LoopState:
    """The loop's counters; stored (as plain values) in every ``last`` checkpoint."""

    step: int = 0
    nan_total: int = 0
    consecutive_bad: int = 0
    rollbacks: int = 0
    lr_scale: float = 1.0
    cycle_best: dict[int, dict[str, Any]] = field(default_factory=dict)
    evals: list[list[float]] = field(default_factory=list)  # [step, cycle, val_loss, val_auc]
    device_seconds: float = 0.0
    mlflow_run_id: str | None = None
    telemetry_key: str | None = None  # finds the MLflow run again if its id was not known yet

    # what a rollback keeps of the present (what happened since the checkpoint)
    KEPT_ON_ROLLBACK = (
        "nan_total",
        "rollbacks",
        "lr_scale",
        "device_seconds",
        "mlflow_run_id",
        "telemetry_key",
    )


class NanGuard:
    def __init__(self, config: NanGuardConfig) -> None:
        self.config = config

    def drain(
        self,
        window: Sequence[StepRecord],
        state: LoopState,
        record: Callable[[int, dict[str, float]], None],
    ) -> int | None:
        """Bring the window's values to the host (one sync for the whole window, if they
        are on the device), count bad steps and ``record`` each step's telemetry.

        Returns the step at which a rollback is due, else None.
        """
        if not window:
            return None
        if not isinstance(window[0].loss, torch.Tensor):  # decided on the host already
            values = [(w.loss, w.grad_norm, w.bad) for w in window]
        else:
            flat = torch.stack([t for w in window for t in w[2:]]).tolist()  # type: ignore[misc]
            values = [(flat[i], flat[i + 1], flat[i + 2] > 0) for i in range(0, len(flat), 3)]
        for w, (loss, gnorm, bad) in zip(window, values, strict=True):
            if bad:
                state.nan_total += 1
                state.consecutive_bad += 1
            else:
                state.consecutive_bad = 0
            record(
                w.step,
                {
                    "lr": w.lr,
                    "train_loss": loss,
                    "grad_norm": gnorm,
                    "nan_count": float(state.nan_total),
                },
            )
            if state.consecutive_bad >= self.config.max_consecutive:
                return w.step
        return None

    def check_rollback(self, state: LoopState, step: int, last: Path) -> None:
        """Raise :class:`TrainingDiverged` when no rollback is left."""
        if state.rollbacks >= self.config.max_rollbacks:
            raise TrainingDiverged(
                f"{state.consecutive_bad} consecutive non-finite steps up to step {step} after "
                f"{state.rollbacks} rollback(s) with the peak lowered to "
                f"{state.lr_scale:g}x lr_max; giving up. The last good checkpoint is "
                f"{last}. Lower schedule.lr_max, check the input data, or raise "
                "nan_guard.max_rollbacks."
            )

    def rolled_back(self, state: LoopState) -> None:
        """Count the rollback just made and lower the peak."""
        state.rollbacks += 1
        state.consecutive_bad = 0
        state.lr_scale *= self.config.rollback_factor
