"""The gate's floors and the canary's sample rules for one data set.

Three sources, the first that says wins:

1. the pipeline's config, when a value is set there explicitly (a YAML key, an
   environment variable such as ``COSINE_RETRAIN_CANARY__MIN_ROWS``);
2. the dataset spec's ``promotion:`` section (``min_auc``, ``min_slice_auc``,
   ``max_auc_drop``, ``canary_share``, ``canary_min_rows``);
3. a default: the section's own for the gate's floors and the canary's share;
   for the canary's minimum labelled rows per arm, one derived from the batch
   sizes seen (:func:`derived_min_rows`), so a data set of 3,000-row batches
   can conclude where flights' 1,000 rows per arm would take four batches; the
   gate's ``max_auc_drop`` is at least the AUC's sampling noise on the holdout
   (:func:`auc_noise`: 0.01 stays for flights, 0.027 for 1,800 rows at 7 %).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.base.config import PipelineConfig
    from pipeline.base.sections import CanaryConfig, GateConfig
    from training.api import DatasetSpec

__all__ = [
    "MIN_ROWS_FLOOR",
    "NOMINAL_AUC",
    "auc_noise",
    "canary_rules",
    "derived_min_rows",
    "gate_rules",
]

# Below this many rows per arm the normal approximation of the review's interval
# (Welch, on per-row log loss) is not to be trusted, whatever the batch size.
MIN_ROWS_FLOOR = 100

_GATE_FIELDS = ("min_auc", "min_slice_auc", "max_auc_drop")
# The AUC at which the gate's noise allowance is computed: a typical tabular model's.
NOMINAL_AUC = 0.7


def gate_rules(
    config: PipelineConfig, spec: DatasetSpec, holdout_target: Sequence[float] | None = None
) -> GateConfig:
    """``config.gate`` with the spec's floors where the config does not set its own; with
    the holdout's labels, ``max_auc_drop`` (set by neither) is at least the AUC's own
    sampling noise on that holdout (:func:`auc_noise`), so a small holdout does not fail
    an equal challenger by chance."""
    gate = config.gate
    update: dict[str, float] = {
        name: getattr(spec.promotion, name)
        for name in _GATE_FIELDS
        if getattr(spec.promotion, name) is not None and name not in gate.model_fields_set
    }
    drop_is_default = "max_auc_drop" not in update and "max_auc_drop" not in gate.model_fields_set
    if holdout_target is not None and drop_is_default:
        import numpy as np

        y = np.asarray(holdout_target, dtype=float)
        positives = int((y == 1).sum())
        noise = auc_noise(positives, len(y) - positives)
        if noise > gate.max_auc_drop:
            update["max_auc_drop"] = round(noise, 4)
    return gate.model_copy(update=update) if update else gate


def auc_noise(positives: int, negatives: int, auc: float = NOMINAL_AUC) -> float:
    """The standard error of an AUC of ``auc`` measured on a holdout with these class
    counts (Hanley & McNeil, 1982):

        Q1 = A / (2 - A),  Q2 = 2 A^2 / (1 + A)
        SE^2 = (A (1 - A) + (n1 - 1)(Q1 - A^2) + (n2 - 1)(Q2 - A^2)) / (n1 n2)

    0.027 for 126 positives in 1,800 rows (a 9k-row window with 7 % positives),
    0.006 for flights' 16,000-row holdouts; infinite without both classes."""
    if positives < 1 or negatives < 1:
        return float("inf")
    a = auc
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = a * (1 - a) + (positives - 1) * (q1 - a * a) + (negatives - 1) * (q2 - a * a)
    return math.sqrt(var / (positives * negatives))


def derived_min_rows(share: float, batch_rows: Sequence[int], cap: int) -> int:
    """Labelled rows each arm needs: half of what the canary serves of a typical
    (median) batch, so one batch of labels can conclude; at least
    :data:`MIN_ROWS_FLOOR`, at most ``cap`` (the config's default)."""
    if not batch_rows:
        return cap
    typical = statistics.median(batch_rows)
    return max(MIN_ROWS_FLOOR, min(cap, round(share * typical / 2)))


def canary_rules(
    config: PipelineConfig, spec: DatasetSpec, batch_rows: Sequence[int] = ()
) -> CanaryConfig:
    """``config.canary`` with ``share`` and ``min_rows`` resolved for this data set
    (``batch_rows``: the row counts of the batches seen, e.g. those the canary served)."""
    canary, promo = config.canary, spec.promotion
    explicit = canary.model_fields_set
    share = canary.share
    if "share" not in explicit and promo.canary_share is not None:
        share = promo.canary_share
    if "min_rows" in explicit:
        min_rows = canary.min_rows
    elif promo.canary_min_rows is not None:
        min_rows = promo.canary_min_rows
    else:
        min_rows = derived_min_rows(share, batch_rows, canary.min_rows)
    return canary.model_copy(update={"share": share, "min_rows": min_rows})
