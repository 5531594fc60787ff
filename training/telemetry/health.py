"""Training health: what the loss and the cycle bests say about a finished run.

Three failures that pass every NaN check and still waste a retrain:

- **flat loss**: the training loss at the end of the run is within
  ``flat_loss_rel`` of where it stood after warmup: nothing was learned (peak
  too low, a dead feature pipeline, a frozen model).
- **restart spike**: the median loss just after a warm restart is more than
  ``restart_spike_ratio`` times the median just before it: the restart peak is
  too high for where the weights are (lower ``peak_decay``, add
  ``restart_warmup_steps``).
- **checkpoint regression**: a cycle's best validation metric is worse than the
  best of the cycles before it by more than ``regression_tol``: later cycles
  overfit or diverge, and the registry receives versions worse than ones it
  already has. Not a finding for the cycles that made cycle-aware stopping end
  the run (``stopped_cycles``): the rule acted on them, so no cycle after them
  was paid for (a run that stopped because its later cycles could not win is
  working as configured, not unhealthy).

:func:`diagnose` is a pure function of plain lists, so the job, the pipeline
(from MLflow's metric history) and tests call it the same way. Each finding
carries its value and threshold; the pipeline turns findings into a
``training_unhealthy`` alert (docs/runbooks.md says what to do about each).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Finding", "HealthThresholds", "diagnose"]


@dataclass(frozen=True)
class HealthThresholds:
    flat_loss_rel: float = 0.02
    restart_spike_ratio: float = 1.5
    restart_window_steps: int = 10
    regression_tol: float = 0.005
    min_steps: int = 50  # shorter runs are not judged for a flat loss

    def __post_init__(self) -> None:
        if not 0.0 <= self.flat_loss_rel < 1.0:
            raise ValueError(f"flat_loss_rel must be in [0, 1), got {self.flat_loss_rel}")
        if self.restart_spike_ratio <= 1.0:
            raise ValueError(f"restart_spike_ratio must be > 1, got {self.restart_spike_ratio}")
        if self.restart_window_steps < 1:
            raise ValueError(f"restart_window_steps must be >= 1, got {self.restart_window_steps}")
        if self.regression_tol < 0.0:
            raise ValueError(f"regression_tol must be >= 0, got {self.regression_tol}")


@dataclass(frozen=True)
class Finding:
    kind: str  # flat_loss | restart_spike | checkpoint_regression
    step: int
    value: float
    threshold: float
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def diagnose(
    losses: Sequence[tuple[int, float]],
    cycle_starts: Sequence[int],
    cycle_bests: Sequence[tuple[int, int, float]],
    *,
    warmup_steps: int = 0,
    higher_is_better: bool = True,
    metric: str = "val_auc",
    thresholds: HealthThresholds | None = None,
    stopped_cycles: Sequence[int] = (),
) -> list[Finding]:
    """Findings about one run, in step order.

    ``losses``: ``(step, train_loss)``, any order, non-finite values ignored.
    ``cycle_starts``: the first step of every cycle after the first (restarts).
    ``cycle_bests``: ``(cycle, step, metric)`` of each closed cycle.
    ``stopped_cycles``: the cycles without a win after which the stopping rule ended
    the run (``TrainResult.stopping.losing_cycles``): no regression finding for them.
    """
    t = thresholds or HealthThresholds()
    by_step = sorted((s, v) for s, v in losses if v == v and abs(v) != float("inf"))
    findings: list[Finding] = []
    findings += _flat_loss(by_step, warmup_steps, t)
    findings += _restart_spikes(by_step, cycle_starts, t)
    findings += _regressions(cycle_bests, higher_is_better, metric, t, set(stopped_cycles))
    return sorted(findings, key=lambda f: (f.step, f.kind))


def _flat_loss(
    by_step: list[tuple[int, float]], warmup_steps: int, t: HealthThresholds
) -> list[Finding]:
    after = [v for s, v in by_step if s >= warmup_steps]
    if len(after) < t.min_steps:
        return []
    n = max(5, len(after) // 10)
    first, last = statistics.median(after[:n]), statistics.median(after[-n:])
    if first <= 0.0:
        return []
    drop = (first - last) / first
    if drop >= t.flat_loss_rel:
        return []
    return [
        Finding(
            "flat_loss",
            by_step[-1][0],
            round(drop, 6),
            t.flat_loss_rel,
            f"train_loss fell {drop:.1%} from after warmup ({first:.4g}) to the end "
            f"({last:.4g}); below {t.flat_loss_rel:.0%}, the run learned nothing",
        )
    ]


def _restart_spikes(
    by_step: list[tuple[int, float]], cycle_starts: Sequence[int], t: HealthThresholds
) -> list[Finding]:
    k = t.restart_window_steps
    out = []
    for start in sorted(cycle_starts):
        before = [v for s, v in by_step if start - k <= s < start]
        after = [v for s, v in by_step if start <= s < start + k]
        if len(before) < max(1, k // 2) or len(after) < max(1, k // 2):
            continue
        pre, post = statistics.median(before), statistics.median(after)
        if pre <= 0.0:
            continue
        ratio = post / pre
        if ratio > t.restart_spike_ratio:
            out.append(
                Finding(
                    "restart_spike",
                    start,
                    round(ratio, 6),
                    t.restart_spike_ratio,
                    f"train_loss after the restart at step {start} is {ratio:.2f}x the loss "
                    f"before it (median of {k} steps: {post:.4g} vs {pre:.4g})",
                )
            )
    return out


def _regressions(
    cycle_bests: Sequence[tuple[int, int, float]],
    higher_is_better: bool,
    metric: str,
    t: HealthThresholds,
    excused: set[int],
) -> list[Finding]:
    out = []
    best_so_far: float | None = None
    best_cycle = -1
    for cycle, step, value in sorted(cycle_bests):
        if value != value:  # NaN metric: never a best, reported by the NaN guard
            continue
        if best_so_far is not None:
            worse_by = (best_so_far - value) if higher_is_better else (value - best_so_far)
            if worse_by > t.regression_tol and cycle not in excused:
                out.append(
                    Finding(
                        "checkpoint_regression",
                        step,
                        round(worse_by, 6),
                        t.regression_tol,
                        f"cycle {cycle}'s best {metric} {value:.4f} is {worse_by:.4f} worse "
                        f"than cycle {best_cycle}'s {best_so_far:.4f}",
                    )
                )
        better = best_so_far is None or (
            value > best_so_far if higher_is_better else value < best_so_far
        )
        if better:
            best_so_far, best_cycle = value, cycle
    return out
