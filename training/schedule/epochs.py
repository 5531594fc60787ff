"""Epochs to optimizer steps: the one place the conversion happens.

A schedule written in epochs gives the same curve (in epochs) for any size of
data: ``steps = round(epochs * steps_per_epoch)``. Bounds keep a tiny or a huge
window sensible: the first cycle ``T0 = cycle_epochs * steps_per_epoch`` is
clamped to ``[min_cycle_steps, max_cycle_steps]``, and the warmup and the
restart ramp are converted at the same (clamped) rate, so the curve keeps its
shape relative to the cycle:

    rate = clamp(cycle_epochs * steps_per_epoch, lo, hi) / cycle_epochs
    T0 = max(1, round(cycle_epochs * rate)),  W = round(warmup_epochs * rate), ...

When the cycle is given in steps the bounds do not apply (the steps are
explicit) and an epoch-form warmup converts at the data's own rate.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_MIN_CYCLE_STEPS", "CycleBounds", "StepPlan", "plan_steps"]

# A cycle shorter than this is noise, not a schedule: a 2,000-row window with
# batch 512 has 3 steps per epoch, and 3 epochs would be a 9-step cycle.
DEFAULT_MIN_CYCLE_STEPS = 20


@dataclass(frozen=True)
class CycleBounds:
    """Bounds on the first cycle's length in steps (``None``: unbounded on that side)."""

    min_cycle_steps: int | None = None
    max_cycle_steps: int | None = None

    def __post_init__(self) -> None:
        lo, hi = self.min_cycle_steps, self.max_cycle_steps
        for name, value in (("min_cycle_steps", lo), ("max_cycle_steps", hi)):
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_cycle_steps {lo} > max_cycle_steps {hi}")

    def over(self, other: CycleBounds) -> CycleBounds:
        """These bounds, with ``other``'s where these are unset."""
        return CycleBounds(
            self.min_cycle_steps if self.min_cycle_steps is not None else other.min_cycle_steps,
            self.max_cycle_steps if self.max_cycle_steps is not None else other.max_cycle_steps,
        )


@dataclass(frozen=True)
class StepPlan:
    """The step counts of a schedule, and the rate (steps per epoch) they were made at."""

    cycle_steps: int
    warmup_steps: int
    restart_warmup_steps: int
    rate: float  # steps per epoch used for the epoch forms (the data's, or clamped)
    clamped: bool  # the cycle hit a bound


def plan_steps(
    steps_per_epoch: int,
    *,
    cycle_steps: int | None = None,
    cycle_epochs: float | None = None,
    warmup_steps: int | None = None,
    warmup_epochs: float | None = None,
    restart_warmup_steps: int | None = None,
    restart_warmup_epochs: float | None = None,
    bounds: CycleBounds | None = None,
) -> StepPlan:
    """Each length in steps: a ``*_steps`` value as is, an ``*_epochs`` value converted.

    Exactly one of ``cycle_steps`` / ``cycle_epochs`` must be given; a warmup given
    in neither form is 0.
    """
    if (cycle_steps is None) == (cycle_epochs is None):
        raise ValueError("give exactly one of cycle_steps and cycle_epochs")
    rate = float(steps_per_epoch)
    clamped = False
    if cycle_epochs is not None:
        b = bounds or CycleBounds()
        raw = cycle_epochs * steps_per_epoch
        lo = b.min_cycle_steps if b.min_cycle_steps is not None else 1
        hi = b.max_cycle_steps if b.max_cycle_steps is not None else max(raw, lo)
        target = min(max(raw, lo), hi)
        clamped = target != raw
        rate = target / cycle_epochs
        cycle = max(1, round(cycle_epochs * rate))
    else:
        assert cycle_steps is not None
        cycle = cycle_steps

    def length(steps: int | None, epochs: float | None) -> int:
        if epochs is not None:
            return round(epochs * rate)
        return steps or 0

    return StepPlan(
        cycle,
        length(warmup_steps, warmup_epochs),
        length(restart_warmup_steps, restart_warmup_epochs),
        rate,
        clamped,
    )
