"""Validation metrics of a streamed validation set, in bounded memory.

:func:`training.engine.bests.metrics_from_logits` takes every target and logit at once
and makes float64 copies of them (the probabilities, the log loss's terms, the ranks
of ``scipy.stats.rankdata``): some 80 bytes a validation row. A streamed window's
validation set comes a row group at a time; :class:`StreamedMetrics` keeps 5 bytes a
row (the float32 logit and whether it is positive) and sums the log loss as it goes:

* log loss: the same per-row formula (``1 / (1 + exp(-logit))`` clipped to
  ``[1e-7, 1 - 1e-7]``), summed in float64 per chunk: equal to ``log_loss`` up to
  the order of the summation (1e-12 relative, tested);
* ROC AUC: the Mann-Whitney U counted exactly, ``U = #(pos > neg) + #(pos = neg) / 2``
  from the sorted negative scores (``np.searchsorted``), then divided once: the same
  float as :func:`training.engine.metrics.roc_auc`'s average-rank formula (both are
  the correctly rounded quotient of the same integers; tested bit for bit).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["StreamedMetrics"]

EPS = 1e-7  # log_loss's clip
CHUNK = 1 << 20  # positives counted at a time


class StreamedMetrics:
    """(val_loss, val_auc) of targets and logits fed in chunks; both NaN when any logit
    is not finite, the AUC NaN when a class is absent (as ``metrics_from_logits``)."""

    def __init__(self) -> None:
        self._logits: list[np.ndarray] = []
        self._positive: list[np.ndarray] = []
        self._loss, self._rows, self._finite = 0.0, 0, True

    def add(self, y: np.ndarray, logits: np.ndarray) -> None:
        logits = np.asarray(logits, dtype=np.float32)
        if not np.isfinite(logits).all():
            self._finite = False
        y64 = np.asarray(y, dtype=np.float64)
        p = np.clip(1.0 / (1.0 + np.exp(-logits.astype(np.float64))), EPS, 1 - EPS)
        self._loss += float((-(y64 * np.log(p) + (1 - y64) * np.log(1 - p))).sum())
        self._rows += len(y64)
        self._logits.append(logits)
        self._positive.append(y64.astype(bool))

    def result(self) -> tuple[float, float]:
        if not self._finite or not self._rows:
            return math.nan, math.nan
        logits, positive = np.concatenate(self._logits), np.concatenate(self._positive)
        self._logits, self._positive = [logits], [positive]
        pos, neg = np.sort(logits[positive]), np.sort(logits[~positive])
        if not len(pos) or not len(neg):
            return self._loss / self._rows, math.nan
        twice_u = 0  # 2U, an exact integer
        for i in range(0, len(pos), CHUNK):
            part = pos[i : i + CHUNK]
            below = np.searchsorted(neg, part, side="left")
            upto = np.searchsorted(neg, part, side="right")
            twice_u += int(below.sum()) * 2 + int((upto - below).sum())
        return self._loss / self._rows, twice_u / (2 * len(pos) * len(neg))
