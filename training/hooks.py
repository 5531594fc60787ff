"""What the job tells the outside world as it runs: one event per committed checkpoint.

A hook is any callable taking a :class:`CheckpointEvent`; the trainer calls each
after a ``last`` checkpoint is written and its telemetry committed (rank 0 only).
A hook must return at once and never raise (the Pushgateway's,
:class:`training.pushgateway.ProgressPusher`, queues and pushes from a thread).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["CheckpointEvent", "CheckpointHook"]


@dataclass(frozen=True)
class CheckpointEvent:
    run_name: str
    step: int
    total_steps: int
    cost_usd: float
    records: Sequence[tuple[int, int, Mapping[str, Any]]]  # the telemetry just committed


CheckpointHook = Callable[[CheckpointEvent], None]
