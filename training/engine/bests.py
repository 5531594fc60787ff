"""The best checkpoint of every cosine cycle, and validation metrics from logits.

Each cycle keeps its own best, chosen on the validation metric (``eval.metric``)
and never touched by a later cycle; closing a cycle makes its best final.
The bests live in the loop's state (plain dicts, so a ``last`` checkpoint holds
them) and become :class:`~training.results.CycleBest` records in the result.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np

from training.engine.metrics import log_loss, roc_auc
from training.engine.nan_guard import LoopState
from training.results import CycleBest

__all__ = ["CycleBests", "metrics_from_logits"]


def metrics_from_logits(y: np.ndarray, logits: np.ndarray) -> tuple[float, float]:
    """(val_loss, val_auc); both NaN when any logit is not finite."""
    if not np.isfinite(logits).all():
        return math.nan, math.nan
    prob = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return log_loss(y, prob), roc_auc(y, logits)


class CycleBests:
    def __init__(self, state: LoopState, metric: str) -> None:
        self.state = state
        self.metric = metric  # val_auc (larger is better) or val_loss (smaller is better)

    def score(self, val_loss: float, val_auc: float) -> float:
        """Larger is better."""
        return val_auc if self.metric == "val_auc" else -val_loss

    def improves(self, cycle: int, val_loss: float, val_auc: float) -> bool:
        """Whether an evaluation would become its cycle's new best."""
        metric = self.score(val_loss, val_auc)
        if not math.isfinite(metric):
            return False  # a NaN evaluation is never a best
        current = self.state.cycle_best.get(cycle)
        return current is None or (
            not current.get("final")
            and metric > self.score(current["val_loss"], current["val_auc"])
        )

    def record(self, best: CycleBest) -> None:
        self.state.cycle_best[best.cycle] = asdict(best)

    def close(self, cycle: int) -> CycleBest | None:
        """Make the cycle's best final; returns it, or None when it was closed already
        (or the cycle had no finite evaluation)."""
        best = self.state.cycle_best.get(cycle)
        if best is None or best.get("final"):
            return None
        best["final"] = True
        return CycleBest.from_dict(best)

    def all(self) -> list[CycleBest]:
        return [CycleBest.from_dict(b) for _, b in sorted(self.state.cycle_best.items())]

    def finals(self) -> list[CycleBest]:
        return [b for b in self.all() if b.final]

    def overall(self) -> CycleBest | None:
        """The best of the closed cycles, or None."""
        finals = self.finals()
        return max(finals, key=lambda b: self.score(b.val_loss, b.val_auc), default=None)
