"""What a study's trials measured, and the pick among them.

:class:`TrialSummary` is one trial as the study records it (its closed cycles with the
steps and running best at each end); :func:`candidates` turns the trials into measured
configs (each trial as it ran and, with ``schedule.max_cycles`` searched, its first k
cycles); :func:`ranked` keeps those within ``tune.adopt_max_loss`` of the highest val AUC,
cheapest first; :func:`confirm_pick` checks a cheaper pick on more seeds beside the
highest (:class:`PickCheck`) before it is kept.
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Pick",
    "PickCheck",
    "TrialSummary",
    "candidates",
    "confirm_pick",
    "ranked",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrialSummary(_Frozen):
    number: int
    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None
    params: dict[str, int | float]
    steps: int | None
    cost_usd: float | None
    run_name: str | None
    pruned_at_cycle: int | None = None
    incumbent: bool = False  # trial 0: the start config's own values
    stopped_by: str | None = None  # PRUNED: "pruner" or "budget" (its own cost.budget_usd)
    fail_reason: str | None = None  # FAIL: why (a diverged run, no finite evaluation)
    # each closed cycle, in order: (optimizer steps at its end, the running best val AUC)
    cycles: list[tuple[int, float]] = []


class PickCheck(_Frozen):
    """One candidate confirmed against the highest on more seeds of the tuning window:
    the paired gains (seed by seed, the study's own seed first) and their interval."""

    trial: int
    cycles: int | None
    gains: list[float]
    mean: float
    low: float
    high: float
    confirmed: bool


class Pick(BaseModel):
    """The study's pick: a trial, or its first ``cycles`` cycles (a shorter config)."""

    model_config = ConfigDict(frozen=True)
    trial: TrialSummary
    cycles: int | None  # None: the trial as it ran; k: its config with max_cycles k
    value: float
    steps: int

    @property
    def params(self) -> dict[str, int | float]:
        if self.cycles is None:
            return self.trial.params
        return {**self.trial.params, "schedule.max_cycles": self.cycles}


def candidates(trials: list[TrialSummary], min_cycles: int | None) -> list[Pick]:
    """What the trials measured: each complete trial as it ran; and, with
    ``schedule.max_cycles`` in the space (``min_cycles``: the fewest cycles such a config
    may have, :func:`pipeline.steps.tuning.study.fewest_cycles`), each trial's
    first k cycles for every k from ``min_cycles`` below the cycles it ran (a pruned or
    budget-stopped trial: up to all the cycles it closed), as the config with
    ``max_cycles`` k. That config's run is the trial's own run cut at the end of cycle
    k - 1 (the same schedule up to there, the same data order and seed), so its steps
    and best val AUC are measured, not guessed: the number of cycles, the cost driver
    restarts add, is searched for free on every trial."""
    out = []
    for t in trials:
        if t.state == "COMPLETE" and t.value is not None and t.steps is not None:
            out.append(Pick(trial=t, cycles=None, value=t.value, steps=t.steps))
        if min_cycles is None or t.state == "FAIL":
            continue
        top = len(t.cycles) if t.state == "PRUNED" else len(t.cycles) - 1
        for k in range(max(1, min_cycles), top + 1):
            steps, value = t.cycles[k - 1]
            out.append(Pick(trial=t, cycles=k, value=value, steps=steps))
    return out


def ranked(
    trials: list[TrialSummary],
    within: float,
    batch_size: int,
    min_cycles: int | None = None,
    valid: Callable[[dict[str, int | float]], bool] | None = None,
) -> list[Pick]:
    """The :func:`candidates` whose val AUC is within ``within`` of the highest
    (``tune.adopt_max_loss``: the loss the adoption rule calls no worse), cheapest first
    (fewest rows trained: steps x its batch size); ties on rows go to the higher AUC,
    then to a trial as it ran. ``valid``: a candidate's params give a valid config."""
    found = [c for c in candidates(trials, min_cycles) if valid is None or valid(c.params)]
    if not found:
        return []
    top = max(c.value for c in found)

    def rows(c: Pick) -> float:
        return float(c.steps) * float(c.trial.params.get("optim.batch_size", batch_size))

    near = [c for c in found if c.value >= top - within]
    return sorted(near, key=lambda c: (rows(c), -c.value, c.cycles is not None))


def confirm_pick(
    near: list[Pick],
    seeds: int,
    confidence: float,
    max_loss: float,
    train: Callable[[dict[str, int | float], int], float | None],
) -> tuple[Pick | None, list[PickCheck]]:
    """The cheapest of ``near`` (:func:`ranked`) that is no worse than the highest beyond
    the noise: each, cheapest first, trains seeds 1 .. ``seeds`` - 1 (``train(params,
    i)``: its best val AUC, None when the budget is spent) beside the highest on the
    same seeds; with the study's seed, the paired gains' interval (``confidence``) must
    not reach below ``-max_loss``, as the adoption rule asks held out. The first one
    confirmed is the pick; none (or no budget left): the highest itself. One seed
    (``seeds`` 1): the cheapest, unconfirmed."""
    from pipeline.steps.tuning.configs import gain_interval

    if not near:
        return None, []
    top = max(near, key=lambda c: c.value)
    if seeds < 2:
        return near[0], []
    checks: list[PickCheck] = []
    reference: dict[int, float | None] = {}
    for c in near:
        if c is top:
            return top, checks
        gains = [c.value - top.value]
        for i in range(1, seeds):
            if i not in reference:
                reference[i] = train(top.params, i)
            mine = train(c.params, i)
            ref = reference[i]
            if mine is None or ref is None:
                return top, checks
            gains.append(mine - ref)
        mean, low, high = gain_interval(gains, confidence)
        ok = low >= -max_loss
        checks.append(
            PickCheck(
                trial=c.trial.number,
                cycles=c.cycles,
                gains=gains,
                mean=mean,
                low=low,
                high=high,
                confirmed=ok,
            )
        )
        if ok:
            return c, checks
    return top, checks
