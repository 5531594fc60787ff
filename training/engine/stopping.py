"""Cycle-aware stopping: at each cycle end, is the next cycle worth its compute?

The rule (``stopping`` in the config, on the cycle bests of ``eval.metric``):

- the first closed cycle's best sets the mark;
- a later cycle **wins** when its best beats the best so far by more than
  ``min_delta`` (AUC: higher, loss: lower; a tie is no win); a win moves the mark and
  resets the streak, anything else adds one to the streak: a NaN best, and a cycle
  with no finite evaluation at all (:meth:`StopRule.close`), included;
- at the end of a cycle that is not the schedule's last, the run **stops** when the
  streak has reached ``patience`` and at least ``min_cycles`` cycles have run: no
  further cycle starts.

The rule is a pure function of the sequence of closed cycle bests; its state
(:class:`StopState`: the mark, the streak and every decision) is stored in every
``last`` checkpoint (``LastPayload.stopping``, strictly loaded), so a run killed
and resumed decides exactly as a run never interrupted. A checkpoint from before
the state was stored (payload version 1) gets it back by replaying the rule over
its closed cycles (:meth:`StopState.replay`).

What a stop saves is priced at the run's own average cost per step so far
(:func:`summarize`): the steps the schedule still held times ``cost_usd / steps_done``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from training.checkpoint.files import CheckpointError
from training.results import CycleBest, StoppingSummary

if TYPE_CHECKING:
    from training.config.train import StoppingConfig
    from training.schedule import CosineSchedule

__all__ = ["STATE_VERSION", "CycleDecision", "StopRule", "StopState", "summarize"]

STATE_VERSION = 1

Action = Literal["continue", "stop", "last"]


@dataclass(frozen=True)
class CycleDecision:
    """What the rule decided when ``cycle`` closed (after its step ``step``)."""

    cycle: int
    step: int  # the last step the cycle ran
    score: float  # the cycle best's metric (NaN: the cycle had no finite evaluation)
    best_before: float | None  # the mark before this cycle (None: the first cycle)
    won: bool
    streak: int  # cycles in a row without a win, this one included
    action: Action  # "last": the schedule had no further cycle to decide about
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StopState:
    """The rule's state; ``to_dict`` goes into the ``last`` checkpoint."""

    best: float | None = None
    best_cycle: int | None = None
    streak: int = 0
    stopped: bool = False
    decisions: list[CycleDecision] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "best": self.best,
            "best_cycle": self.best_cycle,
            "streak": self.streak,
            "stopped": self.stopped,
            "decisions": [d.to_dict() for d in self.decisions],
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "checkpoint") -> StopState:
        """Strict: another version, a missing or an unknown key is a CheckpointError."""
        if not isinstance(data, dict):
            raise CheckpointError(f"{where}: the stopping state is not a mapping")
        if data.get("version") != STATE_VERSION:
            raise CheckpointError(
                f"{where}: stopping state version {data.get('version')!r}; this job reads "
                f"version {STATE_VERSION} (start a new run)"
            )
        expected = {"version", "best", "best_cycle", "streak", "stopped", "decisions"}
        names = {f.name for f in dataclasses.fields(CycleDecision)}
        bad = set(data) ^ expected or any(
            not isinstance(d, dict) or set(d) != names for d in data["decisions"]
        )
        if bad:
            raise CheckpointError(
                f"{where}: the stopping state does not fit this job (keys {sorted(data)}; "
                f"expected {sorted(expected)}, each decision with {sorted(names)})"
            )
        return cls(
            best=data["best"],
            best_cycle=data["best_cycle"],
            streak=int(data["streak"]),
            stopped=bool(data["stopped"]),
            decisions=[CycleDecision(**d) for d in data["decisions"]],
        )

    @classmethod
    def replay(cls, rule: StopRule, closed: Iterable[tuple[CycleBest, int, bool]]) -> StopState:
        """The state after ``closed``: (cycle best, its cycle's last step, whether it
        was the schedule's last cycle), in cycle order."""
        state = cls()
        for best, end_step, is_last in closed:
            rule.observe(state, best.cycle, end_step, best.metric(rule.metric), is_last=is_last)
        return state

    @classmethod
    def restore(
        cls,
        data: dict[str, Any] | None,
        rule: StopRule,
        finals: list[CycleBest],
        schedule: CosineSchedule,
        total_steps: int,
    ) -> StopState:
        """The state a ``last`` checkpoint holds (``LastPayload.stopping``); None (a
        version-1 checkpoint): replayed over its closed cycles ``finals``."""
        if data is not None:
            return cls.from_dict(data, "the last checkpoint")
        ends = [(b, schedule.cycle_end_step(b.cycle)) for b in finals]
        return cls.replay(rule, [(b, end, end >= total_steps - 1) for b, end in ends])

    @property
    def losing_cycles(self) -> list[int]:
        """The cycles of the streak that made the run stop (empty when it did not)."""
        if not self.stopped:
            return []
        return [d.cycle for d in self.decisions[len(self.decisions) - self.streak :]]


class StopRule:
    def __init__(self, config: StoppingConfig, metric: str) -> None:
        self.config = config
        self.metric = metric  # val_auc (larger is better) or val_loss (smaller is better)

    def _better(self, score: float, than: float) -> float:
        """How much ``score`` beats ``than`` (positive: better)."""
        return score - than if self.metric == "val_auc" else than - score

    def close(
        self,
        state: StopState,
        cycle: int,
        end_step: int,
        best: CycleBest | None,
        *,
        is_last: bool,
    ) -> CycleDecision | None:
        """Decide at cycle ``cycle``'s end on its best (None: the cycle had no finite
        evaluation, a NaN score, never a win); None when the cycle was decided already."""
        if any(d.cycle == cycle for d in state.decisions):
            return None
        score = best.metric(self.metric) if best is not None else math.nan
        return self.observe(state, cycle, end_step, score, is_last=is_last)

    def observe(
        self, state: StopState, cycle: int, end_step: int, score: float, *, is_last: bool
    ) -> CycleDecision:
        """Record cycle ``cycle``'s closed best ``score`` and decide (updates ``state``)."""
        c = self.config
        before = state.best
        if not math.isfinite(score):
            won = False
        elif before is None:
            won = True  # the first cycle sets the mark
        else:
            won = self._better(score, before) > c.min_delta
        if won:
            state.best, state.best_cycle, state.streak = score, cycle, 0
        else:
            state.streak += 1
        if math.isfinite(score) and before is not None and not won:
            gain = self._better(score, before)
            why = (
                f"cycle {cycle}'s best {self.metric} {score:.4f} is {gain:+.4f} against cycle "
                f"{state.best_cycle}'s {before:.4f} (a win needs more than +{c.min_delta:g}); "
                f"{state.streak} of {c.patience} cycle(s) without a win"
            )
        elif won and before is not None:
            why = (
                f"cycle {cycle} won: {self.metric} {score:.4f}, {self._better(score, before):+.4f}"
            )
        elif won:
            why = f"cycle {cycle} set the mark: {self.metric} {score:.4f}"
        else:
            why = f"cycle {cycle} had no finite evaluation; {state.streak} of {c.patience}"
        action: Action = "continue"
        if is_last:
            action = "last"
        elif c.enabled and state.streak >= c.patience and cycle + 1 >= c.min_cycles:
            action = "stop"
            state.stopped = True
        decision = CycleDecision(cycle, end_step, score, before, won, state.streak, action, why)
        state.decisions.append(decision)
        return decision


def summarize(
    config: StoppingConfig,
    state: StopState,
    *,
    scheduled_steps: int,
    steps_done: int,
    cost_usd: float,
) -> StoppingSummary:
    """The result's record of the rule: what it decided and what stopping saved."""
    per_step = cost_usd / steps_done if steps_done else 0.0
    saved = scheduled_steps - steps_done if state.stopped else 0
    last = state.decisions[-1] if state.decisions else None
    if state.stopped and last is not None:
        decision = (
            f"stopped after cycle {last.cycle} (step {last.step}): {last.reason}; "
            f"{saved} of {scheduled_steps} scheduled steps not run"
        )
    elif not config.enabled:
        decision = "off (stopping.enabled=false): every scheduled cycle ran"
    else:
        decision = "every scheduled cycle ran: " + (last.reason if last else "no cycle closed")
    return StoppingSummary(
        enabled=config.enabled,
        stopped=state.stopped,
        stopped_after_cycle=last.cycle if state.stopped and last else None,
        stop_step=last.step if state.stopped and last else None,
        scheduled_steps=scheduled_steps,
        steps_done=steps_done,
        steps_saved=saved,
        usd_per_step=per_step,
        usd_saved=round(saved * per_step, 8),
        losing_cycles=state.losing_cycles,
        decision=decision,
        decisions=[d.to_dict() for d in state.decisions],
    )
