"""The ``schedule`` section of the training config: a cosine schedule in epochs or steps.

By default every length is in epochs of the training rows (3-epoch first cycle,
0.75-epoch warmup, 0.15-epoch restart ramp), so a window of any size gets the
same curve; :func:`training.schedule.epochs.plan_steps` converts them to
optimizer steps, once, when the data's size is known, within the bounds
``min_cycle_steps``/``max_cycle_steps`` (this section's, else the dataset
spec's ``schedule:`` section, else at least
:data:`~training.schedule.epochs.DEFAULT_MIN_CYCLE_STEPS`).

Each length has a ``*_steps`` and an ``*_epochs`` form; setting one form (in a
file, with ``--set`` or with ``api.updated``) turns the other off, setting both
is an error.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from training.schedule import CosineSchedule
from training.schedule.epochs import DEFAULT_MIN_CYCLE_STEPS, CycleBounds, plan_steps

__all__ = ["LENGTHS", "ConfigSection", "ScheduleConfig"]

LENGTHS = ("cycle", "warmup", "restart_warmup")


class ConfigSection(BaseModel):
    """Base of the training config's sections: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ScheduleConfig(ConfigSection):
    """A :class:`CosineSchedule` in epochs (the default) or in steps."""

    lr_max: float = Field(3e-3, description="the first cycle's peak rate")
    cycle_steps: int | None = Field(None, description="T0 in optimizer steps (or cycle_epochs)")
    cycle_epochs: float | None = Field(
        3.0, description="T0 in epochs of the training rows (converted once, within the bounds)"
    )
    lr_min: float = Field(3e-5, description="the floor every cycle anneals to")
    warmup_steps: int | None = Field(None, description="W: linear warmup, in steps")
    warmup_epochs: float | None = Field(0.75, description="W in epochs")
    warmup_start_lr: float = Field(0.0, description="the rate at step 0")
    cycle_mult: float = Field(1.5, description="m >= 1 (real): each cycle m times the last")
    peak_decay: float = Field(0.8, description="g in (0, 1]: each restart peaks at g x the last")
    max_cycles: int | None = Field(3, description="K: cycles run (null: max_steps ends the run)")
    restart_warmup_steps: int | None = Field(
        None, description="a linear ramp from lr_min to the peak at every restart, in steps"
    )
    restart_warmup_epochs: float | None = Field(0.15, description="the restart ramp in epochs")
    max_steps: int | None = Field(None, ge=1, description="run length when max_cycles is None")
    min_cycle_steps: int | None = Field(
        None,
        ge=1,
        description="with cycle_epochs: the first cycle has at least this many steps "
        f"(default: the dataset spec's schedule.min_cycle_steps, else {DEFAULT_MIN_CYCLE_STEPS})",
    )
    max_cycle_steps: int | None = Field(
        None,
        ge=1,
        description="with cycle_epochs: the first cycle has at most this many steps "
        "(default: the dataset spec's schedule.max_cycle_steps, else no limit)",
    )

    @model_validator(mode="before")
    @classmethod
    def _other_form_off(cls, data: Any) -> Any:
        return cls.with_other_forms_off(data) if isinstance(data, dict) else data

    @staticmethod
    def with_other_forms_off(fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` where a length given in one form only also nulls its other form,
        so ``cycle_steps: 400`` alone replaces the default ``cycle_epochs``."""
        out = dict(fields)
        for name in LENGTHS:
            steps, epochs = f"{name}_steps", f"{name}_epochs"
            if out.get(steps) is not None and epochs not in out:
                out[epochs] = None
            elif out.get(epochs) is not None and steps not in out:
                out[steps] = None
        return out

    @model_validator(mode="after")
    def _one_unit(self) -> ScheduleConfig:
        for name in LENGTHS:
            steps, epochs = getattr(self, f"{name}_steps"), getattr(self, f"{name}_epochs")
            if steps is not None and epochs is not None:
                raise ValueError(
                    f"schedule.{name}_steps and schedule.{name}_epochs are exclusive: "
                    "set one and null the other"
                )
        if self.cycle_steps is None and self.cycle_epochs is None:
            raise ValueError("schedule needs cycle_steps or cycle_epochs")
        if self.max_cycles is None and self.max_steps is None:
            raise ValueError("schedule needs max_cycles or max_steps (the run must end)")
        if self.cycle_epochs is None and (
            self.min_cycle_steps is not None or self.max_cycle_steps is not None
        ):
            raise ValueError(
                "schedule.min_cycle_steps/max_cycle_steps bound cycle_epochs; with "
                "cycle_steps the length is explicit (null the bounds or use cycle_epochs)"
            )
        self.bounds()
        self._check_values()
        return self

    def lengths(self) -> dict[str, int | float | None]:
        """Each of :data:`LENGTHS` in both forms: ``cycle_steps``, ``cycle_epochs``, ..."""
        return {
            f"{name}_{unit}": getattr(self, f"{name}_{unit}")
            for name in LENGTHS
            for unit in ("steps", "epochs")
        }

    def bounds(self, spec_bounds: CycleBounds | None = None) -> CycleBounds:
        """The cycle bounds in force: this section's, else the spec's, else the default."""
        try:
            mine = CycleBounds(self.min_cycle_steps, self.max_cycle_steps)
        except ValueError as exc:
            raise ValueError(f"schedule.{exc}") from None
        merged = mine.over(spec_bounds or CycleBounds())
        if merged.min_cycle_steps is None:
            lo = DEFAULT_MIN_CYCLE_STEPS
            if merged.max_cycle_steps is not None:
                lo = min(lo, merged.max_cycle_steps)
            merged = CycleBounds(lo, merged.max_cycle_steps)
        return merged

    def _check_values(self) -> None:
        """Every rule of :class:`CosineSchedule` that does not need the data's size, when
        the config is read (not after the data are loaded): with step forms only the
        schedule is built as is; with epoch forms, its rates and factors are checked on
        a stand-in cycle, and the restart ramp against the cycle when both are epochs."""
        forms = (self.cycle_epochs, self.warmup_epochs, self.restart_warmup_epochs)
        if all(f is None for f in forms):
            self.build(1)
            return
        for name in LENGTHS:
            epochs = getattr(self, f"{name}_epochs")
            if epochs is not None and not (epochs > 0 if name == "cycle" else epochs >= 0):
                raise ValueError(
                    f"{name}_epochs must be {'> 0' if name == 'cycle' else '>= 0'}, got {epochs!r}"
                )
        if (
            self.cycle_epochs is not None
            and self.restart_warmup_epochs is not None
            and self.restart_warmup_epochs >= self.cycle_epochs
        ):
            raise ValueError(
                f"restart_warmup_epochs must be smaller than cycle_epochs={self.cycle_epochs}, "
                f"got {self.restart_warmup_epochs!r}"
            )
        self._schedule(self.cycle_steps or 2, self.warmup_steps or 0, 0)

    def _schedule(
        self, cycle_steps: int, warmup_steps: int, restart_warmup_steps: int, **more: Any
    ) -> CosineSchedule:
        """This config's rates and factors with these lengths in steps (``more``: the
        schedule's other arguments)."""
        return CosineSchedule(
            self.lr_max,
            cycle_steps,
            lr_min=self.lr_min,
            warmup_steps=warmup_steps,
            warmup_start_lr=self.warmup_start_lr,
            cycle_mult=self.cycle_mult,
            peak_decay=self.peak_decay,
            max_cycles=self.max_cycles,
            restart_warmup_steps=restart_warmup_steps,
            **more,
        )

    def build(self, steps_per_epoch: int, spec_bounds: CycleBounds | None = None) -> CosineSchedule:
        """The schedule for data with ``steps_per_epoch`` optimizer steps per epoch
        (epoch forms converted by :func:`plan_steps`, within :meth:`bounds`)."""
        plan = plan_steps(steps_per_epoch, **self.lengths(), bounds=self.bounds(spec_bounds))
        return self._schedule(
            plan.cycle_steps,
            plan.warmup_steps,
            plan.restart_warmup_steps,
            steps_per_epoch=steps_per_epoch,
        )
