"""A validation plateau as a restart request (the schedule records it as an event)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from training.schedule.cosine import (
    ScheduleMismatchError,
    check_integer,
    check_real,
    schedule_error,
)

__all__ = ["PlateauRule"]


# --------------------------------------------------------------------------- plateau rule


@dataclass
class PlateauRule:
    """``ReduceLROnPlateau``'s patience rule, asking for a warm restart instead.

    Each observed validation metric is compared with the best of the current
    cycle; after more than ``patience`` observations without an improvement
    larger than ``threshold`` (relative or absolute), a restart is requested.
    The best value and counters reset whenever a new cycle begins (natural or
    requested), and ``cooldown`` observations are ignored after a restart.
    NaN counts as no improvement. ``min_cycle_steps`` keeps young cycles alive.
    """

    patience: int = 3
    mode: Literal["min", "max"] = "min"
    threshold: float = 1e-4
    threshold_mode: Literal["rel", "abs"] = "rel"
    cooldown: int = 0
    min_cycle_steps: int = 0
    # state
    best: float | None = None
    num_bad: int = 0
    cooldown_left: int = 0
    cycle: int = -1

    def __post_init__(self) -> None:
        self.patience = check_integer("patience", self.patience, 0, "an integer >= 0")
        self.cooldown = check_integer("cooldown", self.cooldown, 0, "an integer >= 0")
        self.min_cycle_steps = check_integer(
            "min_cycle_steps", self.min_cycle_steps, 0, "an integer >= 0"
        )
        if self.mode not in ("min", "max"):
            raise schedule_error("mode", "'min' or 'max'", self.mode)
        if self.threshold_mode not in ("rel", "abs"):
            raise schedule_error("threshold_mode", "'rel' or 'abs'", self.threshold_mode)
        self.threshold = check_real("threshold", self.threshold)
        if self.threshold < 0:
            raise schedule_error("threshold", ">= 0", self.threshold)

    def _better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        sign = 1.0 if self.mode == "min" else -1.0
        rel = self.threshold_mode == "rel"
        margin = abs(self.best) * self.threshold if rel else self.threshold
        return sign * (self.best - value) > margin

    def observe(self, value: float, cycle: int, steps_into_cycle: float) -> bool:
        """Record one evaluation; True when a restart should be requested now."""
        value = float(value)
        if cycle != self.cycle:
            self.cycle, self.best, self.num_bad = cycle, None, 0
        if self._better(value):
            self.best, self.num_bad = value, 0
        else:
            self.num_bad += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.num_bad = 0
            return False
        if self.num_bad > self.patience and steps_into_cycle >= self.min_cycle_steps:
            self.num_bad, self.cooldown_left = 0, self.cooldown
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        config = {f: getattr(self, f) for f in ("patience", "mode", "threshold", "threshold_mode")}
        saved = {f: state.get(f) for f in config}
        if saved != config:
            raise ScheduleMismatchError(
                f"plateau rule in the saved state {saved} differs from the configured {config}"
            )
        self.best = state["best"]
        self.num_bad = int(state["num_bad"])
        self.cooldown_left = int(state["cooldown_left"])
        self.cycle = int(state["cycle"])
