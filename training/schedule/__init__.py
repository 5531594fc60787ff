"""The cosine learning-rate schedule (:mod:`.cosine`: pure math of the optimizer step),
the plateau rule (:mod:`.plateau`) and the torch adapter (:mod:`.torch_adapter`).

``from training.schedule import CosineSchedule, CosineAnnealingScheduler, PlateauRule``
is the public import; the definition is in :mod:`training.schedule.cosine`'s
docstring (and DESIGN.md).
"""

from __future__ import annotations

from training.schedule.cosine import (
    CosineSchedule,
    CyclePosition,
    FP16UnderflowWarning,
    ScheduleError,
    ScheduleMismatchError,
)
from training.schedule.plateau import PlateauRule
from training.schedule.torch_adapter import CosineAnnealingScheduler

__all__ = [
    "CosineAnnealingScheduler",
    "CosineSchedule",
    "CyclePosition",
    "FP16UnderflowWarning",
    "PlateauRule",
    "ScheduleError",
    "ScheduleMismatchError",
]
