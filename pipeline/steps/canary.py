"""Canary scoring and review: promote, roll back, or wait for more labels.

**Routing.** A row goes to the canary when ``blake2b(salt, row id)`` read as a
fraction of 2**64 is below the canary's share: stable across runs, machines and
Python versions, so a row re-scored after a retry lands on the same model,
and independent of row order. Every prediction records the version that made
it and the alias it served under.

**Review.** When labels arrive, the rows each model served while the canary
was live are compared on per-row log loss. With ``d`` = canary mean minus
champion mean and a two-sided ``confidence`` interval ``[lo, hi]`` of ``d``
(Welch's normal approximation; both arms have hundreds of rows):

- ``success`` when ``hi <= margin``: the canary is at worst ``margin`` worse
  (non-inferiority); it becomes ``champion`` and the old champion is kept as
  ``previous_champion``;
- ``failure`` when ``lo > margin``: it is worse by more than the margin with
  that confidence; the ``canary`` alias is removed, the version tagged
  ``rejected`` and a ``canary_rolled_back`` alert goes out;
- ``inconclusive`` otherwise, or when an arm has fewer than ``min_rows``
  labelled rows (share and ``min_rows`` per data set: the config, the spec's
  ``promotion:``, else derived from the batch sizes seen, see
  :mod:`pipeline.steps.promotion_rules`): the canary keeps its share; after ``max_wait_hours`` a
  person decides (``canary_needs_decision`` alert), with
  ``python -m pipeline canary promote|reject``.

Alias changes happen under the model's lock in the store and re-check what
they expect (compare-and-set): of two racing promotions exactly one wins.
``champion`` never points at a version that failed its gate or its canary:
:func:`pipeline.steps.promotion.promote` refuses such a version whatever the
caller says.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pipeline.base.layout import predictions_key
from pipeline.base.store import ObjectStore, check_id, get_frame, join_key, put_frame
from pipeline.steps.aliases import CANARY, CHAMPION, RegistryError, current_alias
from pipeline.steps.promotion_rules import canary_rules
from pipeline.steps.quality import PREDICTION_COLUMN

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from pipeline.base.config import PipelineConfig
    from training.data.spec import DatasetSpec

__all__ = [
    "Arm",
    "CanaryReview",
    "Outcome",
    "ScoringSummary",
    "review_canary",
    "route_to_canary",
    "score_batch",
]

log = logging.getLogger(__name__)

Outcome = Literal["success", "failure", "inconclusive", "needs_decision", "no_canary"]


def route_to_canary(ids: Any, share: float, salt: str) -> np.ndarray:
    """Boolean mask: True where a row id is served by the canary."""
    import numpy as np

    if not 0.0 <= share <= 1.0:
        raise ValueError(f"canary share must be in [0, 1], got {share}")
    cut = int(share * 2**64)
    prefix = salt.encode() + b"\x00"
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(prefix + str(i).encode(), digest_size=8).digest(), "big")
            < cut
            for i in ids
        ),
        dtype=bool,
        count=len(ids),
    )


# ------------------------------------------------------------------------------ scoring


@dataclass(frozen=True)
class ScoringSummary:
    dataset: str
    batch_id: str
    rows: int
    champion_version: str | None
    canary_version: str | None
    canary_rows: int
    key: str | None
    reused: bool

    def describe(self) -> str:
        if self.champion_version is None:
            return f"{self.batch_id}: no champion yet, nothing scored"
        canary = (
            f", canary v{self.canary_version} scored {self.canary_rows}"
            if self.canary_version
            else ""
        )
        again = " (already scored: reused)" if self.reused else ""
        return (
            f"{self.batch_id}: {self.rows} rows, champion v{self.champion_version}{canary}{again}"
        )


def _scoring_name(champion: str, canary: str | None) -> str:
    return f"champion-v{champion}" + (f"_canary-v{canary}" if canary else "")


def score_batch(
    client: MlflowClient,
    store: ObjectStore,
    config: PipelineConfig,
    spec: DatasetSpec,
    name: str,
    batch_id: str,
    features: pd.DataFrame,
) -> ScoringSummary:
    """Score a batch with the champion and (for its share of rows) the canary.

    Keyed by batch and by the serving versions: scoring the same batch again
    with the same models reuses what was written (a retried task).
    """
    import pandas as pd

    from pipeline.steps.scoring import load_scorer, predict_probability

    champion = current_alias(client, name, CHAMPION)
    if champion is None:
        return ScoringSummary(spec.name, batch_id, len(features), None, None, 0, None, False)
    canary = current_alias(client, name, CANARY)
    key = predictions_key(spec.name, batch_id, _scoring_name(champion, canary))
    if store.exists(key):
        done = get_frame(store, key)
        canary_rows = int((done["alias"] == CANARY).sum())
        return ScoringSummary(
            spec.name, batch_id, len(done), champion, canary, canary_rows, key, True
        )
    ids = features[spec.id_column].astype(str).to_numpy()
    rules = canary_rules(config, spec)
    to_canary = (
        route_to_canary(ids, rules.share, rules.salt)
        if canary
        else pd.Series(False, index=features.index).to_numpy()
    )
    probability = pd.Series(0.0, index=features.index)
    uri = client.tracking_uri
    for version, mask in ((champion, ~to_canary), (canary, to_canary)):
        if version is None or not mask.any():
            continue
        model = load_scorer(name, version, uri)
        probability.loc[mask] = predict_probability(model, features.loc[mask])
    frame = pd.DataFrame(
        {
            spec.id_column: ids,
            PREDICTION_COLUMN: probability.to_numpy(),
            "model_version": [canary if c else champion for c in to_canary],
            "alias": [CANARY if c else CHAMPION for c in to_canary],
            "scored_at": datetime.now(UTC).isoformat(),
        }
    )
    put_frame(store, key, frame)
    log.info("scored %s: %d rows (%d by canary v%s)", batch_id, len(frame), to_canary.sum(), canary)
    return ScoringSummary(
        spec.name, batch_id, len(frame), champion, canary, int(to_canary.sum()), key, False
    )


# ------------------------------------------------------------------------------ review


@dataclass(frozen=True)
class Arm:
    version: str
    rows: int
    mean_log_loss: float
    auc: float | None


@dataclass(frozen=True)
class CanaryReview:
    model: str
    outcome: Outcome
    reason: str
    canary: Arm | None
    champion: Arm | None
    difference: float | None  # canary minus champion, mean log loss
    interval: tuple[float, float] | None
    margin: float
    confidence: float
    canary_age_hours: float | None
    reviewed_at: str

    def describe(self) -> str:
        lines = [f"canary review of {self.model}: {self.outcome.upper()} - {self.reason}"]
        for label, arm in (("canary", self.canary), ("champion", self.champion)):
            if arm is not None:
                auc = "n/a" if arm.auc is None else f"{arm.auc:.4f}"
                lines.append(
                    f"  {label} v{arm.version}: {arm.rows} labelled rows, "
                    f"log loss {arm.mean_log_loss:.4f}, AUC {auc}"
                )
        return "\n".join(lines)


def _served_rows(
    store: ObjectStore, dataset: str, canary: str, id_column: str = ""
) -> tuple[pd.DataFrame, list[int]]:
    """Every prediction made while ``canary`` was live (any batch, any champion), and
    the row count of each batch scored then (the batch sizes the canary's rules scale with)."""
    import pandas as pd

    prefix = join_key("predictions", check_id(dataset, "dataset name"))
    marker = f"_canary-v{canary}/"
    keys = [k for k in store.list(prefix) if marker in k and k.endswith("predictions.parquet")]
    if not keys:
        return pd.DataFrame(columns=[PREDICTION_COLUMN, "model_version", "alias"]), []
    frames = [get_frame(store, k) for k in sorted(keys)]
    frame = pd.concat(frames, ignore_index=True)
    if "scored_at" in frame.columns and id_column in frame.columns:
        # a row scored again while the same canary served counts once (its latest scoring)
        frame = frame.sort_values("scored_at", kind="stable")
        frame = frame.drop_duplicates(id_column, keep="last")
    return frame, [len(f) for f in frames]


def _arm(frame: pd.DataFrame, version: str, target: str) -> tuple[Arm, Any]:
    import numpy as np

    from training.metrics import roc_auc

    y = frame[target].to_numpy(dtype=np.float64)
    p = np.clip(frame[PREDICTION_COLUMN].to_numpy(dtype=np.float64), 1e-7, 1 - 1e-7)
    losses = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    auc = roc_auc(y, p) if len(frame) else math.nan
    mean = float(losses.mean()) if len(frame) else math.nan
    return Arm(version, len(frame), mean, None if math.isnan(auc) else auc), losses


def review_canary(
    client: MlflowClient,
    store: ObjectStore,
    config: PipelineConfig,
    spec: DatasetSpec,
    name: str,
    labels: pd.DataFrame,
    *,
    now: datetime | None = None,
) -> CanaryReview:
    """Compare canary and champion on the labelled rows each served."""
    from scipy.stats import norm

    c = config.canary
    now = now or datetime.now(UTC)
    canary = current_alias(client, name, CANARY)
    stamp = now.isoformat()
    if canary is None:
        return CanaryReview(
            name,
            "no_canary",
            "no canary is serving",
            None,
            None,
            None,
            None,
            c.margin,
            c.confidence,
            None,
            stamp,
        )
    since = client.get_model_version(name, canary).tags.get("alias.canary.at")
    age = (now - datetime.fromisoformat(since)).total_seconds() / 3600 if since else None
    served, batch_rows = _served_rows(store, spec.name, canary, spec.id_column)
    missing = {spec.id_column, spec.target} - set(labels.columns)
    if missing:
        raise RegistryError(f"labels lack column(s) {sorted(missing)}")
    # the share and minimum rows of this data set: config, spec, else the batch sizes seen
    c = canary_rules(config, spec, batch_rows or [len(labels)])
    joined = served.merge(labels[[spec.id_column, spec.target]], on=spec.id_column, how="inner")
    is_canary = (joined["alias"] == CANARY).to_numpy()
    champion_versions = sorted(set(joined.loc[~is_canary, "model_version"].astype(str)))
    champ_label = ",".join(champion_versions) or (current_alias(client, name, CHAMPION) or "?")
    arm_c, loss_c = _arm(joined[is_canary], canary, spec.target)
    arm_h, loss_h = _arm(joined[~is_canary], champ_label, spec.target)

    def result(outcome: Outcome, reason: str, d: Any = None, ci: Any = None) -> CanaryReview:
        if outcome == "inconclusive" and age is not None and age >= c.max_wait_hours:
            outcome = "needs_decision"
            reason += (
                f"; the canary has waited {age:.0f} h (limit {c.max_wait_hours:g} h): "
                "a person decides (python -m pipeline canary promote|reject)"
            )
        return CanaryReview(
            name, outcome, reason, arm_c, arm_h, d, ci, c.margin, c.confidence, age, stamp
        )

    if arm_c.rows == 0 and arm_h.rows == 0:
        return result(
            "inconclusive",
            f"none of these labelled rows was scored while canary v{canary} was serving "
            "(it started after them): its own labels are still to come",
        )
    if min(arm_c.rows, arm_h.rows) < c.min_rows:
        return result(
            "inconclusive",
            f"too few labelled rows (canary {arm_c.rows}, champion {arm_h.rows}; "
            f"each needs {c.min_rows})",
        )
    d = arm_c.mean_log_loss - arm_h.mean_log_loss
    se = math.sqrt(loss_c.var(ddof=1) / len(loss_c) + loss_h.var(ddof=1) / len(loss_h))
    z = float(norm.ppf(0.5 + c.confidence / 2))
    lo, hi = d - z * se, d + z * se
    detail = (
        f"log loss difference {d:+.4f} ({c.confidence:.0%} interval [{lo:+.4f}, {hi:+.4f}]) "
        f"against a margin of {c.margin:g}"
    )
    if hi <= c.margin:
        return result("success", f"non-inferior: {detail}", d, (lo, hi))
    if lo > c.margin:
        return result("failure", f"worse than the champion: {detail}", d, (lo, hi))
    return result("inconclusive", f"the interval straddles the margin: {detail}", d, (lo, hi))
