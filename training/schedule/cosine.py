"""The cosine learning-rate schedule: a pure function of the optimizer step.

Definition (docs/design.md). ``W`` warmup steps, first cycle length ``T0``, cycle
multiplier ``m >= 1`` (real), peak decay ``g`` in (0, 1], floor ``lr_min``,
optional cycle limit ``K``. For optimizer step ``s`` (0-based):

* warmup, ``s < W``: ``lr = warmup_start_lr + (lr_max - warmup_start_lr) * s / W``
* after warmup, ``t = s - W``; cycle ``i`` covers ``B_i <= t < B_{i+1}`` with
  ``B_i = T0 * (m**i - 1) / (m - 1)`` (``B_i = i * T0`` when ``m == 1``),
  ``t_i = t - B_i`` and ``T_i = T0 * m**i``
* ``lr = lr_min + 0.5 * (peak_i - lr_min) * (1 + cos(pi * t_i / T_i))`` with
  ``peak_i = lr_max * g**i``
* past the cycle limit (``i >= K``) the rate stays at ``lr_min``.

Three choices go beyond that formula and are documented here because they are
visible in the curve:

* The cycle index never comes from ``floor(log(...))``. Boundaries ``B_i`` are
  summed once into a table (boundaries within a relative 1e-12 of an integer
  are snapped to it, so ``m=1.1, T0=10`` restarts at step 21, not at the end of step 21's
  neighbour) and a step is located by bisection. The step that starts a cycle
  always gets that cycle's peak.
* A decayed peak never goes below ``lr_min``: once ``lr_max * g**i <= lr_min``
  the rate holds at ``lr_min`` (timm lets it dip below and rise back).
* ``restart_warmup_steps = R > 0`` ramps every *restart* (cycle ``i >= 1``)
  linearly from ``lr_min`` to the cycle's peak over its first ``R`` steps and
  anneals over the remaining ``T_i - R``; cycle boundaries do not move.

Restarts requested at run time (a validation plateau) are part of the
schedule's value: ``CosineSchedule(..., restarts=(r1, r2))``. A restart at step
``r`` ends the running cycle early and starts the next one at ``r`` (peak,
decay and length as that cycle's index prescribes); the schedule therefore
stays a pure function of ``(step, recorded restarts)``.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
import json
import math
import numbers
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "CosineSchedule",
    "CyclePosition",
    "FP16UnderflowWarning",
    "ScheduleError",
    "ScheduleMismatchError",
]

SCHEDULE_FORMAT = "cosine-retrain/schedule/v1"
SCHEDULER_STATE_FORMAT = "cosine-retrain/scheduler-state/v1"

# fp16 has an 11-bit significand: w + u == w once |u| < |w| * 2**-11. If the
# floor is below 2**-11 of the peak, the floor's updates vanish even when the
# peak's updates are as large as the weights themselves.
FP16_UNIT_ROUNDOFF = 2.0**-11

# A boundary this close (relative) to an integer is that integer; float
# summation error is about i * 2.2e-16 * B_i.
_SNAP_TOLERANCE = 1e-12
_MAX_TABLE = 100_000  # cycle boundaries kept at most (m > 1 grows geometrically)


class ScheduleError(ValueError):
    """A schedule parameter, step or restart is invalid. The message names it."""


class ScheduleMismatchError(ScheduleError):
    """A saved scheduler state belongs to a different schedule (see ``fingerprint``)."""


class FP16UnderflowWarning(UserWarning):
    """``lr_min`` is below what fp16 weights or optimizer state can resolve."""


class CyclePosition(NamedTuple):
    """Where a step sits in the schedule.

    ``cycle`` is 0-based (the initial warmup belongs to cycle 0); ``offset`` is
    ``t_i``, the steps since the cycle began (negative-free, may be fractional
    when ``cycle_mult`` makes boundaries fall between steps); ``length`` is
    ``T_i`` (``W`` during warmup); ``phase`` is one of ``"warmup"``,
    ``"restart_warmup"``, ``"anneal"`` or ``"done"`` (past ``max_cycles``).
    """

    cycle: int
    offset: float
    length: float
    phase: str


# --------------------------------------------------------------------------- validation


def schedule_error(name: str, allowed: str, value: Any) -> ScheduleError:
    return ScheduleError(f"{name} must be {allowed}, got {value!r}")


def check_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise schedule_error(name, "a real number", value)
    value = float(value)
    if not math.isfinite(value):
        raise schedule_error(name, "finite (not NaN or inf)", value)
    return value


def check_integer(name: str, value: Any, minimum: int, allowed: str) -> int:
    if isinstance(value, bool):
        raise schedule_error(name, allowed, value)
    if isinstance(value, numbers.Integral):
        value = int(value)
    elif isinstance(value, numbers.Real):
        if not math.isfinite(value) or not float(value).is_integer():
            raise schedule_error(name, allowed, value)
        value = int(value)
    else:
        raise schedule_error(name, allowed, value)
    if value < minimum:
        raise schedule_error(name, allowed, value)
    return value


def _step(value: Any) -> int:
    if value.__class__ is int and value >= 0:
        return value
    return check_integer("step", value, 0, "a non-negative integer (optimizer steps are 0-based)")


# --------------------------------------------------------------------------- the schedule


@dataclass(frozen=True)
class CosineSchedule:
    """Cosine annealing with linear warmup, warm restarts, peak decay and a floor.

    Args:
        lr_max: peak rate of the first cycle, ``> 0``.
        cycle_steps: ``T0``, optimizer steps in the first cycle, ``>= 1``.
        lr_min: floor, ``0 <= lr_min <= lr_max``.
        warmup_steps: ``W``, linear warmup steps before the first cycle, ``>= 0``.
        warmup_start_lr: rate at step 0 when ``W > 0``, ``0 <= . <= lr_max``.
        cycle_mult: ``m``, each cycle is ``m`` times longer than the last, ``>= 1``.
        peak_decay: ``g``, each cycle's peak is ``g`` times the last, in ``(0, 1]``.
        max_cycles: ``K``, cycles before the rate holds at ``lr_min``; ``None`` = never.
        restart_warmup_steps: ``R``, linear ramp at the start of every restart,
            ``0 <= R < cycle_steps``.
        steps_per_epoch: optimizer steps per pass over the training data the
            schedule was planned for. Not used by the formula; part of the
            fingerprint, so resuming on a data set of another size is refused
            instead of silently stretching the curve.
        restarts: steps at which a restart was requested at run time (strictly
            increasing, each ``>= W``). Not part of the fingerprint.
    """

    lr_max: float
    cycle_steps: int
    lr_min: float = 0.0
    warmup_steps: int = 0
    warmup_start_lr: float = 0.0
    cycle_mult: float = 1.0
    peak_decay: float = 1.0
    max_cycles: int | None = None
    restart_warmup_steps: int = 0
    steps_per_epoch: int | None = None
    restarts: tuple[int, ...] = ()

    # caches, filled in __post_init__ (not part of equality, repr or fingerprint)
    _bounds: list[float] = field(default_factory=list, init=False, repr=False, compare=False)
    _segments: tuple[tuple[int, int, float], ...] = field(
        default=(), init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "lr_max", check_real("lr_max", self.lr_max))
        if self.lr_max <= 0:
            raise schedule_error("lr_max", "> 0", self.lr_max)
        s(self, "cycle_steps", check_integer("cycle_steps", self.cycle_steps, 1, "an integer >= 1"))
        s(self, "lr_min", check_real("lr_min", self.lr_min))
        if not 0.0 <= self.lr_min <= self.lr_max:
            raise schedule_error("lr_min", f"in [0, lr_max={self.lr_max!r}]", self.lr_min)
        s(
            self,
            "warmup_steps",
            check_integer("warmup_steps", self.warmup_steps, 0, "an integer >= 0"),
        )
        s(self, "warmup_start_lr", check_real("warmup_start_lr", self.warmup_start_lr))
        if not 0.0 <= self.warmup_start_lr <= self.lr_max:
            raise schedule_error(
                "warmup_start_lr", f"in [0, lr_max={self.lr_max!r}]", self.warmup_start_lr
            )
        s(self, "cycle_mult", check_real("cycle_mult", self.cycle_mult))
        if self.cycle_mult < 1.0:
            raise schedule_error("cycle_mult", ">= 1 (real values allowed)", self.cycle_mult)
        s(self, "peak_decay", check_real("peak_decay", self.peak_decay))
        if not 0.0 < self.peak_decay <= 1.0:
            raise schedule_error("peak_decay", "in (0, 1]", self.peak_decay)
        if self.max_cycles is not None:
            s(self, "max_cycles", check_integer("max_cycles", self.max_cycles, 1, "None or >= 1"))
        s(
            self,
            "restart_warmup_steps",
            check_integer("restart_warmup_steps", self.restart_warmup_steps, 0, "an integer >= 0"),
        )
        if self.restart_warmup_steps >= self.cycle_steps:
            raise schedule_error(
                "restart_warmup_steps",
                f"smaller than cycle_steps={self.cycle_steps}",
                self.restart_warmup_steps,
            )
        if self.steps_per_epoch is not None:
            s(
                self,
                "steps_per_epoch",
                check_integer("steps_per_epoch", self.steps_per_epoch, 1, "None or >= 1"),
            )
        self._init_bounds()
        s(self, "restarts", self._check_restarts(self.restarts))
        self._init_segments()
        if 0.0 < self.lr_min < self.lr_max * FP16_UNIT_ROUNDOFF:
            floor = self.lr_max * FP16_UNIT_ROUNDOFF
            warnings.warn(
                f"lr_min={self.lr_min:g} is below fp16's resolution next to lr_max={self.lr_max:g} "
                f"(ratio {self.lr_min / self.lr_max:.1e} < 2**-11): with fp16 weights or optimizer "
                f"state the updates at the end of every cycle round to zero. Raise lr_min to at "
                f"least {floor:.2g}, or train in bf16 or fp32.",
                FP16UnderflowWarning,
                stacklevel=3,
            )

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_epochs(
        cls,
        lr_max: float,
        cycle_epochs: float,
        steps_per_epoch: int,
        *,
        warmup_epochs: float = 0.0,
        restart_warmup_epochs: float = 0.0,
        **kwargs: Any,
    ) -> CosineSchedule:
        """Build a schedule from epoch counts (converted by
        :func:`training.schedule.epochs.plan_steps`, the one place epochs become steps):
        each count is multiplied by ``steps_per_epoch`` and rounded to the nearest step
        (cycle length at least 1).
        """
        spe = check_integer("steps_per_epoch", steps_per_epoch, 1, "an integer >= 1")
        cycle = check_real("cycle_epochs", cycle_epochs)
        if cycle <= 0:
            raise schedule_error("cycle_epochs", "> 0", cycle_epochs)
        warm = check_real("warmup_epochs", warmup_epochs)
        rwarm = check_real("restart_warmup_epochs", restart_warmup_epochs)
        if warm < 0:
            raise schedule_error("warmup_epochs", ">= 0", warmup_epochs)
        if rwarm < 0:
            raise schedule_error("restart_warmup_epochs", ">= 0", restart_warmup_epochs)
        from training.schedule.epochs import plan_steps

        plan = plan_steps(spe, cycle_epochs=cycle, warmup_epochs=warm, restart_warmup_epochs=rwarm)
        return cls(
            lr_max,
            plan.cycle_steps,
            warmup_steps=plan.warmup_steps,
            restart_warmup_steps=plan.restart_warmup_steps,
            steps_per_epoch=spe,
            **kwargs,
        )

    def with_restart(self, step: int) -> CosineSchedule:
        """The same schedule with one more run-time restart recorded at ``step``."""
        return dataclasses.replace(self, restarts=(*self.restarts, _step(step)))

    # ------------------------------------------------------------------ the formula

    def lr_at(self, step: int) -> float:
        """The learning rate at optimizer step ``step`` (0-based)."""
        step = _step(step)
        if step < self.warmup_steps:
            return (
                self.warmup_start_lr
                + (self.lr_max - self.warmup_start_lr) * step / self.warmup_steps
            )
        cycle, t_i, length = self._locate(step)
        if self.max_cycles is not None and cycle >= self.max_cycles:
            return self.lr_min
        peak = self.lr_max * self.peak_decay**cycle if cycle else self.lr_max
        if peak <= self.lr_min:
            return self.lr_min
        ramp = self.restart_warmup_steps
        if ramp and cycle:
            if t_i < ramp:
                return self.lr_min + (peak - self.lr_min) * t_i / ramp
            t_i -= ramp
            length -= ramp
        if t_i == 0.0:  # the first step of a cycle is its peak, bit for bit
            return peak
        return self.lr_min + 0.5 * (peak - self.lr_min) * (1.0 + math.cos(math.pi * t_i / length))

    def lrs(self, steps: Iterable[int]) -> list[float]:
        """``[lr_at(s) for s in steps]``."""
        return [self.lr_at(s) for s in steps]

    def position(self, step: int) -> CyclePosition:
        """The cycle, offset inside it, its length and the phase at ``step``."""
        step = _step(step)
        if step < self.warmup_steps:
            return CyclePosition(0, float(step), float(self.warmup_steps), "warmup")
        cycle, t_i, length = self._locate(step)
        if self.max_cycles is not None and cycle >= self.max_cycles:
            phase = "done"
        elif cycle and t_i < self.restart_warmup_steps:
            phase = "restart_warmup"
        else:
            phase = "anneal"
        return CyclePosition(cycle, t_i, length, phase)

    def cycle_of(self, step: int) -> int:
        """0-based cycle index of ``step`` (warmup counts as cycle 0)."""
        step = _step(step)
        return 0 if step < self.warmup_steps else self._locate(step)[0]

    def cycle_start_step(self, cycle: int) -> int:
        """The first optimizer step of ``cycle`` (0 for cycle 0, warmup included)."""
        cycle = check_integer("cycle", cycle, 0, "an integer >= 0")
        if cycle == 0:
            return 0
        seg = self._segments[self._segment_for_cycle(cycle)]
        origin, _, b_first = seg
        guess = origin + math.ceil(self._bounds_at(cycle) - b_first)
        # The ceil can be off by one where float sums round; settle on the exact
        # answer of the locator itself so both always agree.
        while guess > origin and self._locate(guess - 1)[0] >= cycle:
            guess -= 1
        while self._locate(guess)[0] < cycle:
            guess += 1
        return guess

    def cycle_end_step(self, cycle: int) -> int:
        """The last optimizer step of ``cycle``: where its best checkpoint is decided."""
        return self.cycle_start_step(cycle + 1) - 1

    def cycle_end_steps(self, num_cycles: int | None = None) -> list[int]:
        """Last step of each of the first ``num_cycles`` cycles (default ``max_cycles``)."""
        n = self._cycles_arg(num_cycles)
        return [self.cycle_end_step(i) for i in range(n)]

    def total_steps(self, num_cycles: int | None = None) -> int:
        """Optimizer steps needed to finish ``num_cycles`` cycles (default ``max_cycles``)."""
        return self.cycle_start_step(self._cycles_arg(num_cycles))

    def is_cycle_end(self, step: int) -> bool:
        """True when ``step`` is the last step of its cycle (under recorded restarts)."""
        step = _step(step)
        return self.cycle_of(step + 1) != self.cycle_of(step)

    # ------------------------------------------------------------------ identity

    def to_dict(self) -> dict[str, Any]:
        """The defining parameters (JSON-able; restarts excluded)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.init and f.name != "restarts"
        }

    def fingerprint(self) -> str:
        """SHA-256 of the defining parameters and ``steps_per_epoch``.

        Saved with every scheduler state and compared on resume: a run resumed
        with other cycle lengths, rates or data size (steps per epoch) is refused.
        """
        payload = json.dumps({"format": SCHEDULE_FORMAT, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()

    def diff(self, other: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Fields whose value differs from ``other`` (a ``to_dict()``): name -> (other, self)."""
        mine = self.to_dict()
        keys = sorted(set(mine) | set(other))
        return {k: (other.get(k), mine.get(k)) for k in keys if other.get(k) != mine.get(k)}

    # ------------------------------------------------------------------ internals

    def _cycles_arg(self, num_cycles: int | None) -> int:
        if num_cycles is None:
            if self.max_cycles is None:
                raise ScheduleError(
                    "num_cycles is required when the schedule has no max_cycles "
                    "(it would run forever)"
                )
            return self.max_cycles
        return check_integer("num_cycles", num_cycles, 1, "an integer >= 1")

    def _init_bounds(self) -> None:
        # For m == 1 boundaries are i * T0 in exact integer arithmetic: no table.
        if self.cycle_mult > 1.0:
            self._bounds.append(0.0)
            self._ensure_bounds(64)

    def _ensure_bounds(self, cycle: int) -> None:
        """Make sure the table holds ``B_0 .. B_{cycle+1}`` (m > 1 only)."""
        if self.cycle_mult == 1.0 or len(self._bounds) > cycle + 1:
            return
        # Copy-on-extend: readers take the list once, so a concurrent extension
        # never shows them a half-built table.
        bounds = list(self._bounds)
        m, t0 = self.cycle_mult, float(self.cycle_steps)
        while len(bounds) <= cycle + 1 and len(bounds) < _MAX_TABLE:
            nxt = bounds[-1] + t0 * m ** (len(bounds) - 1)
            if not math.isfinite(nxt):
                break
            near = round(nxt)
            if abs(nxt - near) <= _SNAP_TOLERANCE * max(1.0, nxt):
                nxt = float(near)
            bounds.append(nxt)
        object.__setattr__(self, "_bounds", bounds)

    def _bounds_at(self, i: int) -> float:
        if self.cycle_mult == 1.0:
            return float(i * self.cycle_steps)
        self._ensure_bounds(i)
        if i >= len(self._bounds):
            raise ScheduleError(f"cycle {i} starts beyond any representable step")
        return self._bounds[i]

    def _cycle_for_t(self, t: float) -> tuple[int, float, float]:
        """Cycle of natural post-warmup coordinate ``t``: (i, t_i, T_i)."""
        if self.cycle_mult == 1.0:
            t0 = self.cycle_steps
            if t.__class__ is int:
                i, r = divmod(t, t0)
                return i, float(r), float(t0)
            i = int(t // t0)
            return i, t - i * t0, float(t0)
        bounds = self._bounds
        while t >= bounds[-1] and len(bounds) < _MAX_TABLE:
            self._ensure_bounds(2 * len(bounds))
            if len(self._bounds) == len(bounds):  # the next boundary is not finite
                break
            bounds = self._bounds
        i = bisect.bisect_right(bounds, t) - 1
        if i + 1 >= len(bounds):  # beyond the last finite boundary: one endless cycle
            return i, t - bounds[i], math.inf
        return i, t - bounds[i], bounds[i + 1] - bounds[i]

    def _locate(self, step: int) -> tuple[int, float, float]:
        """(cycle, t_i, T_i) of a post-warmup step, honouring recorded restarts."""
        segments = self._segments
        if len(segments) == 1:
            return self._cycle_for_t(step - self.warmup_steps)
        k = bisect.bisect_right(segments, (step, math.inf, math.inf)) - 1
        origin, _, b_first = segments[k]
        if k == 0:
            return self._cycle_for_t(step - origin)
        # restart segment: cycle `first` began at `origin`; later cycles follow
        # with their natural lengths.
        return self._cycle_for_t(step - origin + b_first)

    def _segment_for_cycle(self, cycle: int) -> int:
        firsts = [seg[1] for seg in self._segments]
        return bisect.bisect_right(firsts, cycle) - 1

    def _check_restarts(self, restarts: Any) -> tuple[int, ...]:
        if isinstance(restarts, str | bytes) or not isinstance(restarts, Sequence):
            raise schedule_error("restarts", "a sequence of steps", restarts)
        out = tuple(check_integer("restarts", r, 0, "non-negative integer steps") for r in restarts)
        for a, b in itertools.pairwise(out):
            if b <= a:
                raise schedule_error("restarts", "strictly increasing", list(out))
        if out and out[0] < self.warmup_steps:
            raise ScheduleError(
                f"restarts must be at or after the end of warmup (step {self.warmup_steps}), "
                f"got a restart at step {out[0]}"
            )
        return out

    def _init_segments(self) -> None:
        # Each segment is (first step, first cycle, B of that cycle). The base
        # segment starts at the end of warmup with cycle 0.
        object.__setattr__(self, "_segments", ((self.warmup_steps, 0, 0.0),))
        segments = [(self.warmup_steps, 0, 0.0)]
        for r in self.restarts:
            object.__setattr__(self, "_segments", tuple(segments))
            before = self._locate(r - 1)[0] if r > self.warmup_steps else -1
            cycle = before + 1
            segments.append((r, cycle, self._bounds_at(cycle)))
        object.__setattr__(self, "_segments", tuple(segments))
