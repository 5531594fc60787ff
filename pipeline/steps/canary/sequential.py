"""Anytime-valid comparison of two models' per-row log loss: confidence sequences.

A fixed-sample interval (Welch) is valid at one look; judged again every month its
error rate grows with every look. A *confidence sequence* (CS) is a sequence of
intervals ``[L_t, U_t]`` that contains the true mean at every ``t`` at once with
probability ``1 - alpha``, so the review may look after every batch, for as long as
it likes, and stop at the first look that decides.

**The boundary.** Howard, Ramdas, McAuliffe & Sekhon (2021), "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49(2), eq. (14):
the two-sided normal-mixture boundary. For a sum ``S_t`` of centred increments with
variance process ``V_t``, mixing ``exp(lambda S_t - lambda^2 V_t / 2)`` over
``lambda ~ N(0, 1/rho)`` gives the supermartingale
``sqrt(rho / (V_t + rho)) exp(S_t^2 / (2 (V_t + rho)))``; by Ville's inequality, with
probability ``1 - alpha`` for every ``t``::

    |S_t| < sqrt((V_t + rho) * log((V_t + rho) / (rho * alpha^2)))

so the mean after ``t`` rows lies within ``radius = that / t`` of the running mean.
Here ``V_t = t * s_t^2`` with ``s_t^2`` the running sample variance: the asymptotic
CS of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas (2021), "Time-uniform central
limit theory and asymptotic confidence sequences" (their Gaussian-mixture CS), which
needs no bound on the log loss; the minimum-sample guard keeps ``s_t`` from being
trusted too early. ``rho`` tunes where the CS is tightest: for ``n*`` rows (Howard et
al., section 3.5), ``rho = n* s^2 / (-2 log alpha + log(1 - 2 log alpha))``.

**Two designs.**

- *paired* (:func:`paired_interval`, the shadow): both models score the same rows,
  ``d_i = loss_canary_i - loss_champion_i``; one CS at ``alpha`` on the mean of
  ``d``. The two losses of a row are strongly correlated, so ``d`` varies far less
  than either loss: the paired CS is many times narrower.
- *split* (:func:`split_interval`, the serving canary): each model serves its own
  rows; one CS per arm at ``alpha / 2`` (a union bound), and the difference lies in
  ``[L_c - U_h, U_c - L_h]`` at every look with probability ``1 - alpha``.

**The decision** against the non-inferiority margin ``m`` (``canary.margin``),
with ``[L, U]`` the interval of ``delta`` = canary minus champion mean log loss:

- ``non_inferior`` when ``U < m``: the canary is at most ``m`` worse (promote);
- ``inferior`` when ``L > m``: it is worse by more than ``m`` (roll back);
- ``undecided`` otherwise. A canary exactly ``m`` worse is wrongly promoted, and one
  at most ``m`` worse wrongly rolled back, each with probability at most ``alpha``
  however often the review looks.

Rows are kept as :class:`Moments` (count, sum, sum of squares) per batch, so a
batch reviewed again replaces its own moments instead of adding its rows twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "Interval",
    "Moments",
    "Verdict",
    "fixed_interval",
    "judge",
    "mixture_radius",
    "paired_interval",
    "split_interval",
]

Verdict = Literal["non_inferior", "inferior", "undecided"]


@dataclass(frozen=True)
class Moments:
    """Count, sum and sum of squares of some rows' values (mergeable, JSON-able)."""

    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0

    @classmethod
    def of(cls, values: Any) -> Moments:
        import numpy as np

        x = np.asarray(values, dtype=np.float64)
        if not np.isfinite(x).all():
            raise ValueError("per-row values must be finite (a log loss of a clipped probability)")
        return cls(int(x.size), float(x.sum()), float((x * x).sum()))

    @classmethod
    def sum(cls, parts: Iterable[Moments]) -> Moments:
        n, total, total_sq = 0, 0.0, 0.0
        for p in parts:
            n, total, total_sq = n + p.n, total + p.total, total_sq + p.total_sq
        return cls(n, total, total_sq)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def variance(self) -> float:
        """Sample variance (ddof 1); nan below two rows."""
        if self.n < 2:
            return math.nan
        return max(0.0, (self.total_sq - self.total * self.total / self.n) / (self.n - 1))

    def as_dict(self) -> dict[str, float]:
        return {"n": self.n, "total": self.total, "total_sq": self.total_sq}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Moments:
        return cls(int(data["n"]), float(data["total"]), float(data["total_sq"]))


@dataclass(frozen=True)
class Interval:
    """An interval of ``delta`` (canary minus champion mean log loss) after ``rows``."""

    estimate: float
    lower: float
    upper: float
    rows: int
    kind: Literal["paired", "split", "fixed"]

    def describe(self, level: float) -> str:
        what = {"paired": "paired CS", "split": "split CS", "fixed": "fixed-sample interval"}
        return (
            f"log loss difference {self.estimate:+.4f} ({level:.0%} {what[self.kind]} "
            f"[{self.lower:+.4f}, {self.upper:+.4f}] on {self.rows:,} rows)"
        )


def _rho_denominator(alpha: float) -> float:
    return -2.0 * math.log(alpha) + math.log(1.0 - 2.0 * math.log(alpha))


def mixture_radius(n: int, variance: float, alpha: float, tune_rows: int) -> float:
    """Half-width of the normal-mixture CS for a mean after ``n`` rows of sample
    variance ``variance``, tightest near ``tune_rows`` rows (formula: module docstring).
    Infinite below two rows."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if tune_rows < 1:
        raise ValueError(f"tune_rows must be at least 1, got {tune_rows}")
    if n < 2 or not math.isfinite(variance):
        return math.inf
    var = max(variance, 1e-12)  # a constant difference still gets a (tiny) width
    v = n * var
    rho = tune_rows * var / _rho_denominator(alpha)
    return math.sqrt((v + rho) * math.log((v + rho) / (rho * alpha * alpha))) / n


def paired_interval(diffs: Moments, alpha: float, tune_rows: int) -> Interval:
    """CS at ``alpha`` for the mean of per-row differences on the same rows."""
    r = mixture_radius(diffs.n, diffs.variance, alpha, tune_rows)
    m = diffs.mean
    return Interval(m, m - r, m + r, diffs.n, "paired")


def split_interval(canary: Moments, champion: Moments, alpha: float, tune_rows: int) -> Interval:
    """CS at ``alpha`` for the difference of two arms' means: a CS at ``alpha / 2`` per
    arm, combined by a union bound (``tune_rows``: per arm)."""
    rc = mixture_radius(canary.n, canary.variance, alpha / 2, tune_rows)
    rh = mixture_radius(champion.n, champion.variance, alpha / 2, tune_rows)
    d = canary.mean - champion.mean
    return Interval(d, d - rc - rh, d + rc + rh, min(canary.n, champion.n), "split")


def fixed_interval(canary: Moments, champion: Moments, confidence: float) -> Interval:
    """Today's fixed-sample interval: Welch's normal approximation at one look,
    ``d +- z_{(1+confidence)/2} sqrt(s_c^2 / n_c + s_h^2 / n_h)``."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    d = canary.mean - champion.mean
    if min(canary.n, champion.n) < 2:
        return Interval(d, -math.inf, math.inf, min(canary.n, champion.n), "fixed")
    se = math.sqrt(canary.variance / canary.n + champion.variance / champion.n)
    return Interval(d, d - z * se, d + z * se, min(canary.n, champion.n), "fixed")


def judge(interval: Interval, margin: float) -> Verdict:
    """Non-inferior when the whole interval is below ``margin``, inferior when above."""
    if interval.upper < margin:
        return "non_inferior"
    if interval.lower > margin:
        return "inferior"
    return "undecided"
