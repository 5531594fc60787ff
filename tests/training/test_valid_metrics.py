"""The streamed validation metrics against metrics_from_logits (the in-memory ones)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.engine.bests import metrics_from_logits
from training.engine.valid_metrics import StreamedMetrics


def _fed(y: np.ndarray, logits: np.ndarray, chunks: int) -> tuple[float, float]:
    metrics = StreamedMetrics()
    for a, b in zip(np.array_split(y, chunks), np.array_split(logits, chunks), strict=True):
        metrics.add(a, b)
    return metrics.result()


@pytest.mark.parametrize("rows", [10, 1000, 200_001])
def test_one_chunk_is_bit_identical_and_chunks_change_only_the_losss_rounding(rows: int) -> None:
    rng = np.random.default_rng(rows)
    y = (rng.random(rows) < 0.3).astype(np.float32)
    logits = np.round(rng.normal(size=rows), 2).astype(np.float32)  # many tied scores
    reference = metrics_from_logits(y, logits)
    assert _fed(y, logits, 1) == reference
    loss, auc = _fed(y, logits, 7)
    assert auc == reference[1]  # the same integers, divided once
    assert loss == pytest.approx(reference[0], rel=1e-12)


def test_a_non_finite_logit_or_a_missing_class_is_nan_as_in_memory() -> None:
    y = np.array([0, 1, 0, 1], np.float32)
    bad = np.array([0.1, np.nan, 0.3, 0.2], np.float32)
    assert all(math.isnan(v) for v in _fed(y, bad, 2))
    loss, auc = _fed(np.zeros(4, np.float32), np.arange(4, dtype=np.float32), 2)
    reference = metrics_from_logits(np.zeros(4, np.float32), np.arange(4, dtype=np.float32))
    assert loss == reference[0]
    assert math.isnan(auc)
    assert math.isnan(reference[1])
