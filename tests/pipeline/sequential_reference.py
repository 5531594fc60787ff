"""The canary's confidence sequences written out independently from the raw rows, for
the tests that check the pipeline's decisions against them (test_canary_sequential,
test_canary_flow)."""

from __future__ import annotations

import math

import numpy as np


def log_loss_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Each row's log loss (probabilities clipped away from 0 and 1)."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def cs_radius(x: np.ndarray, alpha: float, tune: int) -> float:
    """Howard et al. (2021) eq. (14) with the sample variance, from the raw rows."""
    n, var = x.size, x.var(ddof=1)
    rho = tune * var / (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha)))
    v = n * var
    return math.sqrt((v + rho) * math.log((v + rho) / (rho * alpha**2))) / n
