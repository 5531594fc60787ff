"""The tuner's parts: its search space, pruner, sampler and trial objective pieces.

Small functions over :class:`~pipeline.base.sections.TuneConfig` and the
training job's typed config; the study itself is run by :mod:`pipeline.flow.tuning`.

- :func:`check_space`: every bound of the space applied to the training config the
  study starts from gives a valid config (and the shortest first cycle still holds
  the longest warmup and the restart ramp), checked before any trial runs;
- :func:`suggest`: one trial's values, from Optuna's trial, as dotted updates for
  :func:`training.api.updated`;
- :class:`CyclePruner`: the training job's cycle hook that reports each closed cycle's
  best val AUC as the trial's intermediate value at the cycle's index and asks the
  job to stop when Optuna's pruner says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.base.config import ConfigError
from pipeline.base.sections import TUNABLE, TuneConfig

if TYPE_CHECKING:
    import optuna

    from training.api import CycleEndEvent, TrainConfig

__all__ = ["CyclePruner", "TuneError", "build_pruner", "build_sampler", "check_space", "suggest"]


class TuneError(ConfigError):
    """The tuning settings cannot work; the message names the field to fix (a
    :class:`ConfigError`: the CLI's exit 2, a DAG task's failure without retry)."""


def check_space(tune: TuneConfig, base: TrainConfig) -> None:
    """Every bound of ``tune.space`` applied to ``base`` is a valid training config.

    Checked before any trial runs: each dimension at its low and its high, all lows
    together, all highs together, and the shortest first cycle with the longest
    warmup (the schedule's rules that involve two fields)."""
    from training.api import ConfigError, updated

    if base.eval.metric != "val_auc":
        raise TuneError(
            f"the tuner maximises the cycle bests' val_auc; the training config's "
            f"eval.metric is {base.eval.metric!r} (set eval.metric: val_auc)"
        )
    lows = {k: r.low for k, r in tune.space.items()}
    highs = {k: r.high for k, r in tune.space.items()}
    corners: list[tuple[str, dict[str, Any]]] = [("all lows", lows), ("all highs", highs)]
    for key, r in tune.space.items():
        corners += [(f"{key} = low", {key: r.low}), (f"{key} = high", {key: r.high})]
    cycle, warm = tune.space.get("schedule.cycle_epochs"), tune.space.get("schedule.warmup_epochs")
    if cycle is not None or warm is not None:
        tight = {}
        if cycle is not None:
            tight["schedule.cycle_epochs"] = cycle.low
        if warm is not None:
            tight["schedule.warmup_epochs"] = warm.high
        corners.append(("the shortest first cycle with the longest warmup", tight))
    for what, values in corners:
        try:
            config = updated(base, values)
        except ConfigError as exc:
            raise TuneError(
                f"tune.space: {what} ({_show(values)}) is not a valid training config: {exc}"
            ) from None
        _check_lengths(config, what, values)


def _check_lengths(config: TrainConfig, what: str, values: dict[str, Any]) -> None:
    """Warmup and restart ramp shorter than the first cycle (in epochs, when both are)."""
    s = config.schedule
    if s.cycle_epochs is None:
        return
    for name in ("warmup_epochs", "restart_warmup_epochs"):
        value = getattr(s, name)
        if value is not None and value >= s.cycle_epochs:
            raise TuneError(
                f"tune.space: {what} ({_show(values)}) gives schedule.{name} {value:g} >= "
                f"schedule.cycle_epochs {s.cycle_epochs:g}: narrow the bounds"
            )


def _show(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in values.items())


def suggest(trial: optuna.trial.Trial, tune: TuneConfig) -> dict[str, float]:
    """One trial's values (dotted training-config fields), in :data:`TUNABLE`'s order."""
    out: dict[str, float] = {}
    for key in TUNABLE:
        r = tune.space.get(key)
        if r is not None:
            out[key] = float(trial.suggest_float(key, r.low, r.high, log=r.log))
    return out


def build_sampler(tune: TuneConfig, trials_so_far: int = 0) -> optuna.samplers.BaseSampler:
    """TPE seeded with ``tune.seed`` plus the trials the study already holds: a resumed
    study draws new values, not the first process's sequence again."""
    import optuna

    return optuna.samplers.TPESampler(
        seed=tune.seed + trials_so_far, n_startup_trials=tune.startup_trials
    )


def build_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    """The median rule at cycle ends (after ``startup_trials`` finished trials), and with
    ``prune_below`` also an absolute floor on a cycle's best val AUC."""
    import optuna

    median = optuna.pruners.MedianPruner(n_startup_trials=tune.startup_trials, n_warmup_steps=0)
    if tune.prune_below is None:
        return median
    floor = optuna.pruners.ThresholdPruner(lower=tune.prune_below)

    class Either(optuna.pruners.BasePruner):  # Optuna has no 'or' of pruners
        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            return median.prune(study, trial) or floor.prune(study, trial)

    return Either()


@dataclass
class CyclePruner:
    """The training job's cycle hook for one trial: each closed cycle's best val AUC
    is the trial's intermediate value at the cycle's index; True (stop the run) when
    the study's pruner prunes the trial there."""

    trial: optuna.trial.Trial
    reported: set[int] = field(default_factory=set)
    pruned_at: int | None = None

    def __call__(self, event: CycleEndEvent) -> bool:
        cycle, value = event.best.cycle, event.best.val_auc
        if cycle in self.reported or not math.isfinite(value):
            return False
        self.trial.report(value, cycle)
        self.reported.add(cycle)
        if self.trial.should_prune():
            self.pruned_at = cycle
            return True
        return False
