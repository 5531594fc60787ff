"""The anytime-valid canary's statistics (pipeline/steps/canary/sequential.py), pure numpy.

Error rates are measured by simulation: many runs of a canary reviewed after every
monthly batch, with per-row log losses drawn from a model of a real classifier (a
skewed, heavy-tailed distribution, not a normal one). The observed rate may exceed
``alpha`` only by Monte Carlo error: the test asserts that the count of errors is at
most the 99.9 % quantile of Binomial(runs, alpha).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats

from pipeline.steps.canary.sequential import (
    Moments,
    fixed_interval,
    judge,
    mixture_radius,
    paired_interval,
    split_interval,
)

ALPHA = 0.05
MARGIN = 0.005
RUNS = 2000
LOOKS = 12  # a year of monthly reviews


def _loss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


@dataclass(frozen=True)
class Pools:
    """Per-row log losses of a fair classifier (a champion) and per-row paired
    differences of two such classifiers on the same rows, centred at zero."""

    loss: np.ndarray
    diff: np.ndarray


def _pools(seed: int = 7, rows: int = 200_000) -> Pools:
    rng = np.random.default_rng(seed)
    truth = rng.beta(2, 6, rows)  # ~25 % positives, like a delay or churn label
    y = (rng.random(rows) < truth).astype(float)
    logit = np.log(truth / (1 - truth))
    champion = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.5, rows))))
    challenger = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.5, rows))))
    loss_h, loss_c = _loss(y, champion), _loss(y, challenger)
    diff = loss_c - loss_h
    return Pools(loss_h - loss_h.mean(), diff - diff.mean())


POOLS = _pools()


def _split_run(
    delta: float,
    canary_rows: int,
    champion_rows: int,
    seed: int,
    design: str,
    runs: int = RUNS,
) -> tuple[np.ndarray, np.ndarray]:
    """First look (1-based; 0 = never) at which each run promotes / rolls back."""
    rng = np.random.default_rng(seed)
    promote_at = np.zeros(runs, dtype=int)
    rollback_at = np.zeros(runs, dtype=int)
    acc_c = [Moments()] * runs
    acc_h = [Moments()] * runs
    for look in range(1, LOOKS + 1):
        c = rng.choice(POOLS.loss, size=(runs, canary_rows)) + delta
        h = rng.choice(POOLS.loss, size=(runs, champion_rows))
        for r in range(runs):
            if promote_at[r] or rollback_at[r]:
                continue
            mc, mh = Moments.of(c[r]), Moments.of(h[r])
            if design == "fixed_per_batch":  # today: each batch judged on its own labels
                interval = fixed_interval(mc, mh, 1 - ALPHA)
            else:
                acc_c[r] = Moments.sum([acc_c[r], mc])
                acc_h[r] = Moments.sum([acc_h[r], mh])
                if design == "fixed_cumulative":
                    interval = fixed_interval(acc_c[r], acc_h[r], 1 - ALPHA)
                else:
                    interval = split_interval(acc_c[r], acc_h[r], ALPHA, 4 * canary_rows)
            verdict = judge(interval, MARGIN)
            if verdict == "non_inferior":
                promote_at[r] = look
            elif verdict == "inferior":
                rollback_at[r] = look
    return promote_at, rollback_at


def _paired_run(
    delta: float, rows: int, seed: int, runs: int = RUNS
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    promote_at = np.zeros(runs, dtype=int)
    rollback_at = np.zeros(runs, dtype=int)
    acc = [Moments()] * runs
    for look in range(1, LOOKS + 1):
        d = rng.choice(POOLS.diff, size=(runs, rows)) + delta
        for r in range(runs):
            if promote_at[r] or rollback_at[r]:
                continue
            acc[r] = Moments.sum([acc[r], Moments.of(d[r])])
            verdict = judge(paired_interval(acc[r], ALPHA, 4 * rows), MARGIN)
            if verdict == "non_inferior":
                promote_at[r] = look
            elif verdict == "inferior":
                rollback_at[r] = look
    return promote_at, rollback_at


def _allowed(rate_of: float = ALPHA) -> int:
    """The most errors that a true rate of ``rate_of`` explains (99.9 % quantile)."""
    return int(stats.binom.ppf(0.999, RUNS, rate_of))


# ------------------------------------------------------------------------- analytic points


def test_the_radius_is_the_normal_mixture_boundary_over_n() -> None:
    n, var, alpha, tune = 1000, 0.25, 0.05, 1000
    rho = tune * var / (-2 * math.log(alpha) + math.log(1 - 2 * math.log(alpha)))
    v = n * var
    expected = math.sqrt((v + rho) * math.log((v + rho) / (rho * alpha**2))) / n
    assert mixture_radius(n, var, alpha, tune) == pytest.approx(expected, rel=1e-12)
    # wider than the fixed-sample z interval at the same n (the price of looking often)
    assert expected > 1.96 * math.sqrt(var / n)
    assert mixture_radius(1, var, alpha, tune) == math.inf
    with pytest.raises(ValueError, match="alpha must be in"):
        mixture_radius(n, var, 1.5, tune)


def test_moments_merge_like_the_rows_they_summarise() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.5, 0.3, 700), rng.normal(0.4, 0.2, 300)
    merged = Moments.sum([Moments.of(a), Moments.of(b)])
    both = np.concatenate([a, b])
    assert merged.n == 1000
    assert merged.mean == pytest.approx(both.mean(), rel=1e-12)
    assert merged.variance == pytest.approx(both.var(ddof=1), rel=1e-9)
    assert Moments.from_dict(merged.as_dict()) == merged
    with pytest.raises(ValueError, match="must be finite"):
        Moments.of([0.1, math.inf])


def test_the_fixed_interval_is_welchs() -> None:
    rng = np.random.default_rng(1)
    c, h = rng.normal(0.5, 0.4, 600), rng.normal(0.48, 0.5, 2400)
    interval = fixed_interval(Moments.of(c), Moments.of(h), 0.95)
    se = math.sqrt(c.var(ddof=1) / c.size + h.var(ddof=1) / h.size)
    assert interval.lower == pytest.approx(c.mean() - h.mean() - stats.norm.ppf(0.975) * se)
    assert interval.upper == pytest.approx(c.mean() - h.mean() + stats.norm.ppf(0.975) * se)


def test_paired_differences_decide_where_the_split_arms_cannot() -> None:
    """Same rows, same models: the paired CS is several times narrower."""
    rng = np.random.default_rng(3)
    rows = rng.choice(len(POOLS.loss), 5000)
    paired = paired_interval(Moments.of(POOLS.diff[rows]), ALPHA, 5000)
    split = split_interval(
        Moments.of(POOLS.loss[rows[:2500]]), Moments.of(POOLS.loss[rows[2500:]]), ALPHA, 2500
    )
    assert (paired.upper - paired.lower) * 5 < split.upper - split.lower


# ----------------------------------------------------------------- error rates (simulation)


def test_false_promotions_and_rollbacks_stay_within_alpha_with_monthly_looks() -> None:
    """A canary exactly ``margin`` worse (the hardest case for both errors): a
    promotion says it is better than that, a rollback says it is worse; each must stay
    at or below alpha over a year of monthly looks. An equal canary (delta 0) is
    rolled back even less often."""
    promote, rollback = _split_run(MARGIN, 300, 1200, seed=11, design="sequential")
    assert (promote > 0).sum() <= _allowed(), (promote > 0).mean()
    assert (rollback > 0).sum() <= _allowed(), (rollback > 0).mean()
    _, equal_rollback = _split_run(0.0, 300, 1200, seed=12, design="sequential")
    assert (equal_rollback > 0).sum() <= _allowed()


def test_the_paired_shadow_keeps_alpha_with_monthly_looks() -> None:
    promote, rollback = _paired_run(MARGIN, 1500, seed=13)
    assert (promote > 0).sum() <= _allowed(), (promote > 0).mean()
    assert (rollback > 0).sum() <= _allowed(), (rollback > 0).mean()


@pytest.mark.parametrize("design", ["fixed_per_batch", "fixed_cumulative"])
def test_the_fixed_sample_test_peeked_monthly_exceeds_alpha(design: str) -> None:
    """The reason for the change: today's interval, looked at every month, promotes a
    canary that is ``margin`` worse far more often than alpha (one-sided alpha/2 per
    look, so one look alone would be at 2.5 %)."""
    promote, rollback = _split_run(MARGIN, 300, 1200, seed=21, design=design)
    errors = int((promote > 0).sum() + (rollback > 0).sum())
    # the smallest true rate consistent with the count (one-sided 99.9 %) is above alpha
    assert stats.beta.ppf(0.001, errors, RUNS - errors + 1) > ALPHA, errors / RUNS


def test_a_real_difference_decides_within_a_measured_number_of_rows() -> None:
    """A canary 0.05 better, or 0.06 worse, than the champion, 1,000 canary rows a
    month: the split CS decides every run, in a median of 3 looks (3,000 canary rows,
    seeded, measured); the paired CS decides a 0.01 better or 0.02 worse challenger
    in a median of 3 looks of 1,500 shadow rows."""
    better, _ = _split_run(-0.05, 1000, 4000, seed=31, design="sequential", runs=200)
    _, worse = _split_run(0.06, 1000, 4000, seed=32, design="sequential", runs=200)
    assert (better > 0).all()
    assert (worse > 0).all()
    assert np.median(better) == 3
    assert np.median(worse) == 3
    paired_better, _ = _paired_run(-0.01, 1500, seed=33, runs=200)
    _, paired_worse = _paired_run(0.02, 1500, seed=34, runs=200)
    assert (paired_better > 0).all()
    assert (paired_worse > 0).all()
    assert np.median(paired_better) <= 3
    assert np.median(paired_worse) <= 3
