"""The canary review's two decisions, as (outcome, reason, difference, interval).

:func:`fixed_verdict` is today's fixed-sample test (Welch, one look);
:func:`sequential_verdict` the anytime-valid one (confidence sequences over every
labelled batch since the canary started, :mod:`pipeline.steps.canary.sequential`, with the
shadow's paired evidence, :mod:`pipeline.steps.canary.shadow`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.steps.canary.sequential import (
    Interval,
    Moments,
    fixed_interval,
    judge,
    split_interval,
)
from pipeline.steps.canary.shadow import Evidence, alpha_each

if TYPE_CHECKING:
    from pipeline.base.sections import CanaryConfig

__all__ = ["Verdict", "fixed_verdict", "sequential_verdict"]

# outcome, reason, difference (canary minus champion mean log loss), interval
Verdict = tuple[str, str, float | None, tuple[float, float] | None]


def result(
    outcome: str, reason: str, d: float | None = None, ci: tuple[float, float] | None = None
) -> Verdict:
    return outcome, reason, d, ci


def fixed_verdict(
    rows: tuple[int, int], loss_c: Any, loss_h: Any, canary: str, c: CanaryConfig
) -> Verdict:
    """Today's test: a Welch interval on the rows of the batches under review alone
    (``rows``: canary's and champion's labelled rows, ``loss_*``: their per-row losses)."""
    if rows == (0, 0):
        return result(
            "inconclusive",
            f"none of these labelled rows was scored while canary v{canary} was serving "
            "(it started after them): its own labels are still to come",
        )
    if min(rows) < c.min_rows:
        return result(
            "inconclusive",
            f"too few labelled rows (canary {rows[0]}, champion {rows[1]}; "
            f"each needs {c.min_rows})",
        )
    ci = fixed_interval(Moments.of(loss_c), Moments.of(loss_h), c.confidence)
    detail = (
        f"log loss difference {ci.estimate:+.4f} ({c.confidence:.0%} interval "
        f"[{ci.lower:+.4f}, {ci.upper:+.4f}]) against a margin of {c.margin:g}"
    )
    verdict = judge(ci, c.margin)
    bounds = (ci.lower, ci.upper)
    if verdict == "non_inferior":
        return result("success", f"non-inferior: {detail}", ci.estimate, bounds)
    if verdict == "inferior":
        return result("failure", f"worse than the champion: {detail}", ci.estimate, bounds)
    return result(
        "inconclusive", f"the interval straddles the margin: {detail}", ci.estimate, bounds
    )


def sequential_verdict(evidence: Evidence, shadow: Interval | None, c: CanaryConfig) -> Verdict:
    """The anytime-valid decision on every labelled batch since the canary started:

    - the shadow's paired CS above the margin: ``failure`` (it never serves);
    - the canary's split CS below the margin: ``success``; above it: ``failure``;
    - the shadow's paired CS below the margin and the canary's own arms at
      ``min_rows`` without showing inferiority: ``success`` (the shadow carries the
      evidence, the canary shows the serving path works);
    - otherwise ``inconclusive`` (after ``horizon_batches``: a person decides).
    """
    margin = f"against a margin of {c.margin:g}"
    shadow_verdict = None if shadow is None else judge(shadow, c.margin)
    shadow_text = "" if shadow is None else f"shadow: {shadow.describe(1 - alpha_each(c))}"
    if shadow_verdict == "inferior":
        return result("failure", f"worse than the champion in shadow: {shadow_text} {margin}")
    cum_c, cum_h = evidence.canary_totals()
    if cum_c.n == 0 and cum_h.n == 0:
        if shadow_verdict == "non_inferior":
            return result(
                "inconclusive",
                f"non-inferior in shadow ({shadow_text} {margin}): the canary serves from "
                "the next batch scored",
            )
        if evidence.shadow_total().n:
            return result(
                "inconclusive",
                f"in shadow, undecided so far ({shadow_text or 'too few rows'}; "
                f"{evidence.shadow_total().n} paired rows, {c.min_rows} needed)",
            )
        return result(
            "inconclusive",
            "none of these labelled rows was scored while the canary was serving or in "
            "shadow (it started after them): its own labels are still to come",
        )
    if min(cum_c.n, cum_h.n) < c.min_rows:
        return result(
            "inconclusive",
            f"too few labelled rows (canary {cum_c.n}, champion {cum_h.n}; "
            f"each needs {c.min_rows})" + (f"; {shadow_text}" if shadow_text else ""),
        )
    split = split_interval(cum_c, cum_h, alpha_each(c), 4 * c.min_rows)
    detail = f"{split.describe(1 - alpha_each(c))} {margin}"
    if shadow_text:
        detail += f"; {shadow_text}"
    bounds = (split.lower, split.upper)
    verdict = judge(split, c.margin)
    if verdict == "inferior":
        return result("failure", f"worse than the champion: {detail}", split.estimate, bounds)
    if verdict == "non_inferior":
        return result("success", f"non-inferior: {detail}", split.estimate, bounds)
    if shadow_verdict == "non_inferior":
        return result(
            "success",
            f"non-inferior in shadow (paired), and serving shows no inferiority: {detail} "
            f"(both sequences together wrong at most {1 - c.confidence:.0%} of the time)",
            split.estimate,
            bounds,
        )
    return result("inconclusive", f"the CS straddles the margin: {detail}", split.estimate, bounds)
