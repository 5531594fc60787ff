"""The torch adapter: a thin ``LRScheduler`` over :class:`CosineSchedule`.

After ``n`` calls of :meth:`CosineAnnealingScheduler.step`, param group 0's rate
is exactly ``schedule.lr_at(n)`` (every other group keeps its ratio). Its
``state_dict`` holds plain values (the step, restarts recorded at run time, the
plateau rule's counters) and loads with ``weights_only=True``; loading checks the
saved schedule's fingerprint and never replaces the schedule you constructed.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from training.schedule.cosine import (
    SCHEDULER_STATE_FORMAT,
    CosineSchedule,
    CyclePosition,
    ScheduleError,
    ScheduleMismatchError,
    check_integer,
    check_real,
)
from training.schedule.plateau import PlateauRule

__all__ = ["CosineAnnealingScheduler"]


# --------------------------------------------------------------------------- torch adapter


class CosineAnnealingScheduler(LRScheduler):
    """A thin ``torch.optim.lr_scheduler.LRScheduler`` over a :class:`CosineSchedule`.

    After ``n`` calls of :meth:`step`, param group ``k`` has rate
    ``schedule.lr_at(n) * scale_k``, where ``scale_k = base_lr_k / base_lr_0``
    (the groups' rates when the scheduler was created), so group 0 follows the
    schedule exactly and every other group keeps its ratio to it. Pass
    ``group_scales`` to set the ratios explicitly.

    Nothing is carried from one step to the next but the step count and the
    recorded restarts: the rate is always recomputed from the closed form, so
    replaying and jumping agree, and ``state_dict()`` is enough to resume.
    ``load_state_dict`` never replaces the schedule given to the constructor:
    it refuses a state whose schedule fingerprint differs.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: CosineSchedule,
        last_epoch: int = -1,
        *,
        plateau: PlateauRule | None = None,
        group_scales: Sequence[float] | None = None,
    ) -> None:
        if not isinstance(schedule, CosineSchedule):
            raise TypeError(f"schedule must be a CosineSchedule, got {type(schedule).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self.schedule = schedule
        self.plateau = plateau
        self.group_scales = self._scales(optimizer, group_scales)
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _scales(optimizer: Optimizer, given: Sequence[float] | None) -> list[float]:
        groups = optimizer.param_groups
        if given is not None:
            scales = [check_real("group_scales", g) for g in given]
            if len(scales) != len(groups) or any(g < 0 for g in scales):
                raise ScheduleError(
                    f"group_scales must hold one non-negative number per param group "
                    f"({len(groups)}), got {list(given)!r}"
                )
            return scales
        base = [float(g.get("initial_lr", g["lr"])) for g in groups]
        if base[0] <= 0:
            raise ScheduleError(
                f"param group 0 has lr={base[0]!r}; the other groups' ratios are taken "
                "relative to it, so it must be > 0 (or pass group_scales=)"
            )
        return [b / base[0] for b in base]

    # -- stepping ---------------------------------------------------------------------

    def get_lr(self) -> list[float]:
        lr = self.schedule.lr_at(max(self.last_epoch, 0))
        return [lr * s for s in self.group_scales]

    _get_closed_form_lr = get_lr

    def step(self, epoch: int | None = None) -> None:
        """Advance one optimizer step; call it after ``optimizer.step()``."""
        if epoch is not None:
            raise TypeError(
                "CosineAnnealingScheduler.step() takes no epoch: the rate is a function "
                "of the optimizer step count (use load_state_dict to resume)"
            )
        if self._step_count == 1 and not getattr(self.optimizer, "_opt_called", False):
            warnings.warn(
                "scheduler.step() was called before optimizer.step(): the first rate of "
                "the schedule is skipped",
                UserWarning,
                stacklevel=2,
            )
        self._step_count += 1
        self.last_epoch += 1
        self.apply_lr()

    def apply_lr(self) -> None:
        lr = self.schedule.lr_at(self.last_epoch)
        last = []
        for group, scale in zip(self.optimizer.param_groups, self.group_scales, strict=True):
            value = lr * scale
            current = group["lr"]
            if isinstance(current, torch.Tensor):
                current.fill_(value)
            else:
                group["lr"] = value
            last.append(value)
        self._last_lr = last

    # -- restarts ---------------------------------------------------------------------

    @property
    def restarts(self) -> tuple[int, ...]:
        return self.schedule.restarts

    @property
    def position(self) -> CyclePosition:
        """Position of the step the optimizer takes next."""
        return self.schedule.position(self.last_epoch)

    def request_restart(self) -> bool:
        """Start the next cycle at the step the optimizer takes next.

        Recorded in the state, so a resumed run sees the same curve. Returns
        False (and records nothing) when that step already starts a cycle or is
        still in the initial warmup.
        """
        step = self.last_epoch
        if step < self.schedule.warmup_steps or step == 0:
            return False
        if self.schedule.cycle_of(step) != self.schedule.cycle_of(step - 1):
            return False
        if self.schedule.restarts and step <= self.schedule.restarts[-1]:
            return False
        self.schedule = self.schedule.with_restart(step)
        self.apply_lr()
        return True

    def observe(self, metric: float) -> bool:
        """Feed one validation metric to the plateau rule; True if it restarted.

        Requires ``plateau=`` at construction. The rule does not restart into a
        cycle beyond ``max_cycles`` (that would end training early).
        """
        if self.plateau is None:
            raise ScheduleError("observe() needs a PlateauRule: pass plateau= to the scheduler")
        pos = self.schedule.position(self.last_epoch)
        if pos.phase in ("warmup", "done"):
            return False
        if not self.plateau.observe(metric, pos.cycle, pos.offset):
            return False
        limit = self.schedule.max_cycles
        if limit is not None and pos.cycle + 1 >= limit:
            return False
        return self.request_restart()

    # -- state --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Plain Python values only (safe for ``torch.load(weights_only=True)``)."""
        return {
            "format": SCHEDULER_STATE_FORMAT,
            "step": self.last_epoch,
            "step_count": self._step_count,
            "restarts": list(self.schedule.restarts),
            "fingerprint": self.schedule.fingerprint(),
            "schedule": self.schedule.to_dict(),
            "group_scales": list(self.group_scales),
            "plateau": self.plateau.state_dict() if self.plateau is not None else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume: step, restarts and plateau state. The schedule itself must match."""
        expected = {
            "format",
            "step",
            "step_count",
            "restarts",
            "fingerprint",
            "schedule",
            "group_scales",
            "plateau",
        }
        if not isinstance(state_dict, dict) or set(state_dict) != expected:
            keys = sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict)
            raise ScheduleMismatchError(
                f"not a CosineAnnealingScheduler state (keys {keys}); expected {sorted(expected)}"
            )
        if state_dict["format"] != SCHEDULER_STATE_FORMAT:
            raise ScheduleMismatchError(
                f"scheduler state format {state_dict['format']!r} is not {SCHEDULER_STATE_FORMAT!r}"
            )
        if state_dict["fingerprint"] != self.schedule.fingerprint():
            changes = self.schedule.diff(state_dict["schedule"])
            described = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in changes.items())
            hint = ""
            if "steps_per_epoch" in changes:
                hint = (
                    " The training data changed size: resuming would stretch or restart the "
                    "curve. Start a new schedule (a fresh run) or keep the original data."
                )
            raise ScheduleMismatchError(
                f"the saved scheduler state belongs to another schedule ({described}).{hint}"
            )
        if [float(s) for s in state_dict["group_scales"]] != self.group_scales:
            raise ScheduleMismatchError(
                f"param group scales differ: saved {state_dict['group_scales']}, "
                f"now {self.group_scales}"
            )
        if (state_dict["plateau"] is None) != (self.plateau is None):
            raise ScheduleMismatchError(
                "the saved state and this scheduler disagree on whether a plateau rule is used"
            )
        self.schedule = dataclasses.replace(self.schedule, restarts=tuple(state_dict["restarts"]))
        self.last_epoch = check_integer("step", state_dict["step"], 0, "a non-negative integer")
        self._step_count = int(state_dict["step_count"])
        if self.plateau is not None:
            self.plateau.load_state_dict(state_dict["plateau"])
        self.apply_lr()
