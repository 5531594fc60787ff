"""What the job tells the outside world as it runs: one event per committed checkpoint.

A hook is any callable taking a :class:`CheckpointEvent`; the trainer calls each
after a ``last`` checkpoint is written and its telemetry committed (rank 0 only).
A hook must return at once and never raise (the Pushgateway's,
:class:`training.pushgateway.ProgressPusher`, queues and pushes from a thread).

A cycle hook is any callable taking a :class:`CycleEndEvent`; the trainer calls each
when a cycle closes (its best is known, the stopping rule has decided). A hook that
returns True asks the run to end there: the trainer writes ``last`` and finishes
with status ``pruned`` (the tuner's pruner, :mod:`pipeline.flow.tuning`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from training.results import CycleBest

__all__ = ["CheckpointEvent", "CheckpointHook", "CycleEndEvent", "CycleHook"]


@dataclass(frozen=True)
class CheckpointEvent:
    run_name: str
    step: int
    total_steps: int
    cost_usd: float
    records: Sequence[tuple[int, int, Mapping[str, Any]]]  # the telemetry just committed


CheckpointHook = Callable[[CheckpointEvent], None]


@dataclass(frozen=True)
class CycleEndEvent:
    run_name: str
    best: CycleBest  # the closed cycle's best (its cycle, step, val_auc, val_loss)
    end_step: int  # the cycle's last step
    cost_usd: float  # the run's cost so far


CycleHook = Callable[[CycleEndEvent], bool]
