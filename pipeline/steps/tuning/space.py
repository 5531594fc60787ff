"""The tuner's parts: its search space, pruner, sampler and trial objective pieces.

Small functions over :class:`~pipeline.base.sections.TuneConfig` and the
training job's typed config; the study itself is run by :mod:`pipeline.flow.tuning`.

- :func:`check_space`: every bound of the space applied to the training config the
  study starts from gives a valid config (and the shortest first cycle still holds
  the longest warmup and the restart ramp), checked before any trial runs;
- :func:`suggest`: one trial's values, from Optuna's trial;
  :func:`training_updates` turns them into dotted updates for
  :func:`training.api.updated` (``model.width`` into ``model.hidden``);
- :func:`build_pruner`: Optuna's successive halving (or Hyperband)
  with its first rung at :func:`prune_warmup_epochs` (every trial's first cycle end);
- :class:`CyclePruner`: the training job's cycle hook that reports the trial's running
  best val AUC at the epochs run (:func:`epoch_step`) at each cycle end and asks the
  job to stop when Optuna's pruner says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.base.config import ConfigError
from pipeline.base.sections import INTEGER, TUNABLE, TuneConfig

if TYPE_CHECKING:
    import optuna

    from training.api import CycleEndEvent, TrainConfig

__all__ = [
    "EPOCH_UNITS",
    "CyclePruner",
    "TuneError",
    "build_pruner",
    "build_sampler",
    "check_space",
    "epoch_step",
    "prune_warmup_epochs",
    "start_value",
    "suggest",
    "training_updates",
]

WIDTH = "model.width"  # the widest hidden layer's units; not a training-config field


class TuneError(ConfigError):
    """The tuning settings cannot work; the message names the field to fix (a
    :class:`ConfigError`: the CLI's exit 2, a DAG task's failure without retry)."""


def start_value(key: str, base: TrainConfig) -> int | float | None:
    """The value of the searched field ``key`` in ``base`` (``model.width``: its widest
    hidden layer)."""
    if key == WIDTH:
        return max(base.model.hidden)
    section, name = key.split(".")
    value = getattr(getattr(base, section), name)
    return None if value is None else value


def training_updates(params: dict[str, int | float], base: TrainConfig) -> dict[str, Any]:
    """A trial's values as dotted updates of the training config ``base``: each as it
    is, but ``model.width`` w, which sets every hidden layer of ``base.model.hidden`` to
    ``max(1, round(h * w / max(hidden)))``: the widest layer gets w units, the others
    keep their ratio to it ([256, 128] at width 64: [64, 32])."""
    out: dict[str, Any] = {k: v for k, v in params.items() if k != WIDTH}
    if WIDTH in params:
        width, hidden = int(params[WIDTH]), base.model.hidden
        top = max(hidden)
        out["model.hidden"] = [max(1, round(h * width / top)) for h in hidden]
    return out


# pairs of fields a rule of the training config ties: (what, the field at its low, the
# field at its high), the tightest corner of the two
_TIED = (
    (
        "the shortest first cycle with the longest warmup",
        "schedule.cycle_epochs",
        "schedule.warmup_epochs",
    ),
    ("the fewest cycles with the most patience", "schedule.max_cycles", "stopping.patience"),
)


def check_space(tune: TuneConfig, base: TrainConfig) -> None:
    """Every bound of ``tune.space`` applied to ``base`` is a valid training config.

    Checked before any trial runs: all lows together, all highs together, each
    dimension at its low and its high (the others at the start config's values, moved
    into their ranges: a trial never trains a searched field outside its range), and
    the pairs of fields a rule of the training config ties together: the shortest first
    cycle with the longest warmup, and the fewest cycles with the most stopping
    patience (a rule that could never stop a run is refused)."""
    from training.api import ConfigError, updated

    if base.eval.metric != "val_auc":
        raise TuneError(
            f"the tuner maximises the cycle bests' val_auc; the training config's "
            f"eval.metric is {base.eval.metric!r} (set eval.metric: val_auc)"
        )
    lows = {k: r.low for k, r in tune.space.items()}
    highs = {k: r.high for k, r in tune.space.items()}
    corners: list[tuple[str, dict[str, Any]]] = [("all lows", lows), ("all highs", highs)]
    for what, short, long in _TIED:
        ends = ((short, "low"), (long, "high"))
        tight = {k: getattr(tune.space[k], end) for k, end in ends if k in tune.space}
        if tight:
            corners.append((what, tight))
    for key, r in tune.space.items():
        corners += [(f"{key} = low", {key: r.low}), (f"{key} = high", {key: r.high})]
    anchor = {k: _clamp(start_value(k, base), r.low, r.high) for k, r in tune.space.items()}
    for what, values in corners:
        chosen = {k: v for k, v in anchor.items() if v is not None} | values
        typed = {k: int(v) if k in INTEGER else v for k, v in chosen.items()}
        try:
            config = updated(base, training_updates(typed, base))
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


def _clamp(value: float | None, low: float, high: float) -> float | None:
    return None if value is None else min(max(float(value), low), high)


def _show(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in values.items())


def suggest(trial: optuna.trial.Trial, tune: TuneConfig) -> dict[str, int | float]:
    """One trial's values (dotted training-config fields), in :data:`TUNABLE`'s order
    (the :data:`INTEGER` ones as integers)."""
    out: dict[str, int | float] = {}
    for key in TUNABLE:
        r = tune.space.get(key)
        if r is None:
            continue
        if key in INTEGER:
            out[key] = trial.suggest_int(key, int(r.low), int(r.high), log=r.log)
        else:
            out[key] = float(trial.suggest_float(key, r.low, r.high, log=r.log))
    return out


def build_sampler(tune: TuneConfig, trials_so_far: int = 0) -> optuna.samplers.BaseSampler:
    """TPE seeded with ``tune.seed`` plus the trials the study already holds: a resumed
    study draws new values, not the first process's sequence again."""
    import optuna

    return optuna.samplers.TPESampler(
        seed=tune.seed + trials_so_far, n_startup_trials=tune.startup_trials
    )


EPOCH_UNITS = 100  # a rung's step is in hundredths of an epoch (Optuna's steps are integers)


def epoch_step(steps_done: int, steps_per_epoch: int) -> int:
    """The intermediate value's step for a trial that has run ``steps_done`` optimizer
    steps: the epochs run, in :data:`EPOCH_UNITS` (so trials whose cycles end at
    different steps are compared at the same amount of data seen)."""
    return round(EPOCH_UNITS * steps_done / steps_per_epoch)


def prune_warmup_epochs(tune: TuneConfig, base: TrainConfig) -> float:
    """The first rung in epochs: ``tune.prune_warmup_epochs``, else the shortest warmup
    plus the shortest first cycle the space allows (else 1 epoch: a start config whose
    lengths are in steps).

    Every trial reaches it at its first cycle end, the only cycle end before the one
    where cycle-aware stopping first decides (``stopping.min_cycles`` 2): a rung placed
    later (the longest warmup plus first cycle) is first met at the second cycle end, where
    the stopping rule has either ended the run (pruning saves nothing) or let it go on
    because its second cycle won (pruning cuts only the trials doing well). The price:
    ``schedule.cycle_mult`` and ``schedule.peak_decay`` have not acted yet at this rung
    (the first cycle does not depend on them). A trial cut here is a candidate of the
    pick only where a one-cycle config may be (stopping off and ``max_cycles`` from 1:
    :func:`pipeline.steps.tuning.study.fewest_cycles`)."""
    if tune.prune_warmup_epochs is not None:
        return tune.prune_warmup_epochs
    total = 0.0
    for name in ("warmup_epochs", "cycle_epochs"):
        r = tune.space.get(f"schedule.{name}")
        value = r.low if r is not None else getattr(base.schedule, name)
        if value is None:
            return 1.0
        total += float(value)
    return total if total > 0 else 1.0


def build_pruner(tune: TuneConfig, warmup_epochs: float) -> optuna.pruners.BasePruner:
    """``tune.pruner`` on the running best val AUC reported at the epochs run, its first
    rung (no pruning before) at ``warmup_epochs``, pruning only once ``startup_trials``
    trials have completed (before that it still records every trial's rung values); with
    ``prune_below`` also an absolute floor at any cycle end."""
    import optuna

    rung = max(1, round(EPOCH_UNITS * warmup_epochs))
    rule: optuna.pruners.BasePruner
    if tune.pruner == "halving":
        rule = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=rung, reduction_factor=tune.prune_reduction, min_early_stopping_rate=0
        )
    elif tune.pruner == "hyperband":
        rule = optuna.pruners.HyperbandPruner(
            min_resource=rung, max_resource="auto", reduction_factor=tune.prune_reduction
        )
    else:
        rule = optuna.pruners.NopPruner()
    floor = (
        optuna.pruners.ThresholdPruner(lower=tune.prune_below)
        if tune.prune_below is not None
        else optuna.pruners.NopPruner()
    )
    startup = tune.startup_trials

    class Pruner(optuna.pruners.BasePruner):  # Optuna has no 'or' of pruners, nor a wait
        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            ruled = rule.prune(study, trial)  # called always: halving records its rungs
            states = (optuna.trial.TrialState.COMPLETE,)
            ready = len(study.get_trials(deepcopy=False, states=states)) >= startup
            return (ruled and ready) or floor.prune(study, trial)

    return Pruner()


@dataclass
class CyclePruner:
    """The training job's cycle hook for one trial: at each cycle end it reports the
    trial's running best val AUC (the best of all its closed cycles, not the cycle's
    own) at the epochs run (:func:`epoch_step`), and returns True (stop the run) when
    the study's pruner prunes the trial there. At the schedule's last cycle end it is
    never pruned: the run is over, pruning it would save nothing."""

    trial: optuna.trial.Trial
    reported: set[int] = field(default_factory=set)
    best: float | None = None
    pruned_at: int | None = None

    def report(self, cycle: int, value: float, steps_done: int, steps_per_epoch: int) -> bool:
        """Fold cycle ``cycle``'s best into the running best and report it; False when
        nothing was reported (a cycle seen before, or no finite value yet)."""
        if cycle in self.reported:
            return False
        self.reported.add(cycle)
        if math.isfinite(value) and (self.best is None or value > self.best):
            self.best = value
        if self.best is None:
            return False
        self.trial.report(self.best, epoch_step(steps_done, steps_per_epoch))
        return True

    def __call__(self, event: CycleEndEvent) -> bool:
        done = event.end_step + 1
        if not self.report(event.best.cycle, event.best.val_auc, done, event.steps_per_epoch):
            return False
        pruned = self.trial.should_prune()  # at the last cycle too: its rung values count
        if pruned and done < event.total_steps:
            self.pruned_at = event.best.cycle
            return True
        return False
