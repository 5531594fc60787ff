"""The cosine learning-rate schedule (:mod:`.cosine`: pure math of the optimizer step),
the plateau rule (:mod:`.plateau`) and the torch adapter (:mod:`.torch_adapter`).

``from training.schedule import CosineSchedule, CosineAnnealingScheduler, PlateauRule``
is the public import; the definition is in :mod:`training.schedule.cosine`'s
docstring (and docs/design.md).
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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from training.schedule.torch_adapter import CosineAnnealingScheduler


def __getattr__(name: str) -> object:
    # the torch adapter on first use: the schedule's math and the configs that use it
    # (read by the pipeline and the DAG files) import no torch
    if name == "CosineAnnealingScheduler":
        from training.schedule.torch_adapter import CosineAnnealingScheduler

        return CosineAnnealingScheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CosineAnnealingScheduler",
    "CosineSchedule",
    "CyclePosition",
    "FP16UnderflowWarning",
    "PlateauRule",
    "ScheduleError",
    "ScheduleMismatchError",
]
