"""Guardrails before labels: checks of the canary's outputs on every scored batch.

Labels come a batch later (a month on flights, two years on GSS); a canary that outputs
NaN, a constant, or scores far from the champion's would serve until then. As the
analysis step of Argo Rollouts and Flagger does with a service's metrics, every batch
the canary scores (in shadow or serving) is checked on its outputs alone, against the
champion's scores **of the same rows** (the champion scores every row of a batch, the
canary's too, unserved, so the comparison is paired whatever the phase):

- ``finite``: the share of the canary's scores that are non-finite or outside [0, 1]
  is at most ``canary.guard_max_invalid_share`` (default 0: one NaN breaches);
- ``constant``: their standard deviation is at least ``canary.guard_min_std``;
- ``ks``: the two-sample Kolmogorov-Smirnov distance between the canary's and the
  champion's scores on those rows is at most ``canary.guard_max_ks`` (an effect
  size, not a p-value: on 30,000 rows any shift is "significant"). Loose by design:
  a healthy retrain is often calibrated differently from an older champion (up to 0.72
  on the flights demo), so it catches gross shifts, outputs pinned near 0 or 1;
- ``rank``: the pairs themselves, which a distance between two distributions ignores
  (a canary that scores the right values for the wrong rows, its features misaligned,
  has a KS distance of 0): Spearman's rank correlation between the canary's and the
  champion's scores of the same rows. It breaches when even its upper confidence bound
  (Fisher's z with Spearman's variance 1.06 / (n - 3), one-sided, level
  ``canary.guard_rank_alpha``) is below ``canary.guard_min_rank_corr``: a scrambled or
  inverted canary, not a small batch's noise;
- ``srm`` (serving only): sample-ratio mismatch, a chi-square test of the rows the
  hash split sent to the canary against its configured share; ``p`` below
  ``canary.guard_srm_alpha`` breaches (rows with duplicated ids, a router that drifts
  from the config).

The distribution checks wait for ``canary.guard_min_rows`` rows (``not judged``
below); ``finite`` judges any number. A breach rolls the canary back
(:func:`pipeline.steps.canary.routing.score_batch`) with the failed checks as the
reason; every report is stored per batch and shown on the model card.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pipeline.base.records import Stored
from pipeline.base.store import ObjectStore, check_id, join_key, put_json

if TYPE_CHECKING:
    from pipeline.base.sections import CanaryConfig

__all__ = ["Check", "GuardrailReport", "check_outputs", "guardrail_key", "store_report"]


@dataclass(frozen=True)
class Check(Stored):
    name: Literal["finite", "constant", "ks", "rank", "srm"]
    passed: bool | None  # None: not judged (too few rows, or not this phase's check)
    value: float | None
    limit: float | None
    detail: str

    def describe(self) -> str:
        verdict = {True: "PASS", False: "BREACH", None: "n/a"}[self.passed]
        return f"{verdict} {self.name}: {self.detail}"


@dataclass(frozen=True)
class GuardrailReport(Stored):
    """The guardrails of one batch the canary scored."""

    model: str
    canary_version: str
    champion_version: str
    batch_id: str
    phase: Literal["shadow", "canary"]
    rows: int  # rows the canary scored
    checks: list[Check] = field(default_factory=list)

    @property
    def breaches(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    @property
    def passed(self) -> bool:
        return not self.breaches

    def reason(self) -> str:
        """The failed checks, as the rollback's reason."""
        failed = "; ".join(c.describe() for c in self.breaches)
        return (
            f"guardrail breached on batch {self.batch_id} ({self.phase}, {self.rows} rows, "
            f"against champion v{self.champion_version}): {failed}"
        )

    def describe(self) -> str:
        head = "passed" if self.passed else "BREACHED"
        return f"guardrails {head} on {self.batch_id} ({self.phase}, {self.rows} rows): " + (
            ", ".join(f"{c.name} {'ok' if c.passed else 'n/a' if c.passed is None else 'FAIL'}"
                      for c in self.checks)
        )  # fmt: skip


def _finite(scores: Any, rules: CanaryConfig) -> Check:
    import numpy as np

    bad = ~np.isfinite(scores) | (scores < 0.0) | (scores > 1.0)
    share = float(bad.mean()) if scores.size else 0.0
    return Check(
        "finite",
        share <= rules.guard_max_invalid_share,
        share,
        rules.guard_max_invalid_share,
        f"{int(bad.sum())} of {scores.size} scores non-finite or outside [0, 1]",
    )


def _constant(valid: Any, rules: CanaryConfig) -> Check:
    import numpy as np

    if valid.size < rules.guard_min_rows:
        return Check("constant", None, None, rules.guard_min_std, f"{valid.size} valid scores")
    std = float(np.std(valid))
    return Check(
        "constant",
        std >= rules.guard_min_std,
        std,
        rules.guard_min_std,
        f"standard deviation {std:.3g} of {valid.size} scores (at least {rules.guard_min_std:g})",
    )


def _ks(canary: Any, champion: Any, rules: CanaryConfig) -> Check:
    from scipy import stats

    if min(canary.size, champion.size) < rules.guard_min_rows:
        return Check("ks", None, None, rules.guard_max_ks, f"{canary.size} rows")
    distance = float(stats.ks_2samp(canary, champion).statistic)
    return Check(
        "ks",
        distance <= rules.guard_max_ks,
        distance,
        rules.guard_max_ks,
        f"KS distance {distance:.3f} between canary and champion scores on the same "
        f"{canary.size} rows (at most {rules.guard_max_ks:g})",
    )


def _rank(canary: Any, champion: Any, rules: CanaryConfig) -> Check:
    import numpy as np
    from scipy import stats

    n = canary.size
    limit = rules.guard_min_rank_corr
    if n < max(rules.guard_min_rows, 4):
        return Check("rank", None, None, limit, f"{n} rows")
    if np.ptp(canary) == 0 or np.ptp(champion) == 0:  # the constant check judges it
        return Check("rank", None, None, limit, "constant scores have no ranking")
    rho = float(stats.spearmanr(canary, champion).statistic)
    z = math.atanh(min(max(rho, -0.999999), 0.999999))
    upper = math.tanh(z + float(stats.norm.isf(rules.guard_rank_alpha)) * math.sqrt(1.06 / (n - 3)))
    return Check(
        "rank",
        upper >= limit,
        rho,
        limit,
        f"Spearman correlation {rho:.3f} between canary and champion scores of the same "
        f"{n} rows (upper bound {upper:.3f} at level {rules.guard_rank_alpha:g}; "
        f"at least {limit:g})",
    )


def _srm(routed: int, total: int, rules: CanaryConfig) -> Check:
    from scipy import stats

    expected = [total * rules.share, total * (1 - rules.share)]
    if total < rules.guard_min_rows or min(expected) < 5:  # chi-square needs 5 per cell
        return Check("srm", None, None, rules.guard_srm_alpha, f"{total} rows")
    p = float(stats.chisquare([routed, total - routed], expected).pvalue)
    return Check(
        "srm",
        p >= rules.guard_srm_alpha,
        p,
        rules.guard_srm_alpha,
        f"{routed} of {total} rows to the canary ({routed / total:.1%}) against a share of "
        f"{rules.share:.1%}: chi-square p {p:.2g} (at least {rules.guard_srm_alpha:g})",
    )


def check_outputs(
    canary: Any,
    champion: Any,
    rules: CanaryConfig,
    *,
    routed: tuple[int, int] | None,
) -> list[Check]:
    """The guardrails on the canary's scores and the champion's of the same rows
    (``routed``: rows sent to the canary and rows in the batch, serving; None: shadow)."""
    import numpy as np

    canary = np.asarray(canary, dtype=np.float64)
    champion = np.asarray(champion, dtype=np.float64)
    ok = np.isfinite(canary) & (canary >= 0) & (canary <= 1) & np.isfinite(champion)
    checks = [
        _finite(canary, rules),
        _constant(canary[ok], rules),
        _ks(canary[ok], champion[ok], rules),
        _rank(canary[ok], champion[ok], rules),
    ]
    if routed is None:
        checks.append(Check("srm", None, None, rules.guard_srm_alpha, "shadow: no split"))
    else:
        checks.append(_srm(*routed, rules))
    return checks


def guardrail_key(model: str, version: str, batch_id: str) -> str:
    return join_key(
        "reports",
        "canary",
        check_id(model, "model name"),
        f"v{version}",
        "guardrails",
        f"{check_id(batch_id, 'batch id')}.json",
    )


def store_report(store: ObjectStore, report: GuardrailReport) -> str:
    """The report under its batch (a re-scored batch replaces its own): its key."""
    key = guardrail_key(report.model, report.canary_version, report.batch_id)
    put_json(store, key, report.as_dict(), overwrite=True)
    return key
