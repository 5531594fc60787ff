"""The canary review: promote, roll back, or wait for more labels; and acting on it.

**Review.** When labels arrive, the rows each model served while the canary
was live are compared on per-row log loss (``d`` = canary mean minus champion
mean), against the non-inferiority ``margin``:

- ``success`` when the interval's upper end is below ``margin``: the canary is at
  worst ``margin`` worse; it becomes ``champion`` and the old champion is kept as
  ``previous_champion``;
- ``failure`` when its lower end is above ``margin``: the ``canary`` alias is
  removed, the version tagged ``rejected`` and a ``canary_rolled_back`` alert goes out;
- ``inconclusive`` otherwise, or when an arm has fewer than ``min_rows``
  labelled rows (share and ``min_rows`` per data set: the config, the spec's
  ``promotion:``, else derived from the batch sizes seen, see
  :mod:`pipeline.steps.promotion.rules`): the canary keeps its share; after
  ``horizon_batches`` labelled batches (sequential: shadow and serving batches, each
  once) or ``max_wait_hours`` (fixed) a person decides (``canary_needs_decision``
  alert), with ``python -m pipeline canary promote|reject``.

``canary.test: sequential`` (the default) builds the interval as a confidence
sequence over every labelled batch since the canary started, valid however often
it is reviewed (:mod:`pipeline.steps.canary.sequential`; rules in
:func:`pipeline.steps.canary.verdicts.sequential_verdict`); ``fixed`` is the test before
it: Welch's interval on the rows of the batches under review alone.

Alias changes happen under the model's lock in the store and re-check what
they expect (compare-and-set): of two racing promotions exactly one wins.
``champion`` never points at a version that failed its gate or its canary:
:func:`pipeline.steps.promotion.actions.promote` refuses such a version whatever the
caller says.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pipeline.base.alerts import AlertKind, raise_alert
from pipeline.base.store import ObjectStore, check_id, get_frame, join_key, put_json
from pipeline.steps.canary.sequential import Moments, judge
from pipeline.steps.canary.shadow import (
    SHADOW_COLUMN,
    evidence_key,
    record_batches,
    served_keys,
    shadow_interval,
)
from pipeline.steps.canary.verdicts import fixed_verdict, sequential_verdict
from pipeline.steps.promotion.actions import PromotionResult, promote, reject_canary
from pipeline.steps.promotion.approval import PENDING
from pipeline.steps.promotion.rules import canary_rules
from pipeline.steps.quality.live import PREDICTION_COLUMN
from pipeline.steps.registry.aliases import CANARY, CHAMPION, RegistryError, current_alias

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from pipeline.base.config import PipelineConfig
    from training.api import DatasetSpec

__all__ = ["Arm", "CanaryReview", "Outcome", "apply_review", "review_canary"]

log = logging.getLogger(__name__)

Outcome = Literal["success", "failure", "inconclusive", "needs_decision", "no_canary"]


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
    method: Literal["sequential", "fixed"] = "fixed"
    # the shadow's paired evidence: rows, mean difference (canary minus champion), its CS
    shadow_rows: int = 0
    shadow_difference: float | None = None
    shadow_interval: tuple[float, float] | None = None
    batches: int = 0  # labelled batches in the evidence, shadow and serving (the horizon's)
    evidence_uri: str | None = None
    compared_with: str | None = None  # the champion version the evidence was measured against

    def describe(self) -> str:
        lines = [f"canary review of {self.model}: {self.outcome.upper()} - {self.reason}"]
        if self.compared_with:
            lines.append(
                f"  evidence against champion v{self.compared_with}, {self.batches} labelled "
                "batch(es)"
            )
        for label, arm in (("canary", self.canary), ("champion", self.champion)):
            if arm is not None:
                auc = "n/a" if arm.auc is None else f"{arm.auc:.4f}"
                lines.append(
                    f"  {label} v{arm.version}: {arm.rows} labelled rows, "
                    f"log loss {arm.mean_log_loss:.4f}, AUC {auc} (this review's rows)"
                )
        if self.shadow_rows:
            lines.append(f"  shadow: {self.shadow_rows} paired rows, {self._shadow_text()}")
        return "\n".join(lines)

    def _shadow_text(self) -> str:
        if self.shadow_interval is None or self.shadow_difference is None:
            return "too few for a verdict"
        lo, hi = self.shadow_interval
        return f"difference {self.shadow_difference:+.4f}, CS [{lo:+.4f}, {hi:+.4f}]"


def _served_rows(
    store: ObjectStore, dataset: str, canary: str, id_column: str = "", champion: str | None = None
) -> tuple[pd.DataFrame, list[int]]:
    """Every prediction made while ``canary`` was live, serving or in shadow (any batch),
    beside ``champion`` (None: any), with its ``batch_id`` and ``phase``; and the row
    count of each batch scored then (the batch sizes the canary's rules scale with)."""
    import pandas as pd

    frames = []
    for phase in ("shadow", "canary"):
        for k in served_keys(store, dataset, canary, shadow=phase == "shadow", champion=champion):
            frame = get_frame(store, k)
            frame["batch_id"] = k.split("/")[-3]  # predictions/<dataset>/<batch>/<pair>/...
            frame["phase"] = phase
            frames.append(frame)
    if not frames:
        columns = [id_column, PREDICTION_COLUMN, "model_version", "alias", "batch_id", "phase"]
        return pd.DataFrame(columns=columns), []
    frame = pd.concat(frames, ignore_index=True)
    if "scored_at" in frame.columns and id_column in frame.columns:
        # a row scored again while the same canary served counts once (its latest scoring);
        # a row is (batch, id): an id may recur in every batch (the spec's id_scope)
        frame = frame.sort_values("scored_at", kind="stable")
        frame = frame.drop_duplicates(["batch_id", id_column], keep="last")
    return frame, [len(f) for f in frames]


def _losses(frame: pd.DataFrame, target: str, column: str = PREDICTION_COLUMN) -> Any:
    import numpy as np

    y = frame[target].to_numpy(dtype=np.float64)
    p = np.clip(frame[column].to_numpy(dtype=np.float64), 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _arm(frame: pd.DataFrame, version: str, target: str) -> tuple[Arm, Any]:
    import numpy as np

    from training.api import roc_auc

    y = frame[target].to_numpy(dtype=np.float64)
    p = frame[PREDICTION_COLUMN].to_numpy(dtype=np.float64)
    losses = _losses(frame, target)
    auc = roc_auc(y, p) if len(frame) else math.nan
    mean = float(losses.mean()) if len(frame) else math.nan
    return Arm(version, len(frame), mean, None if math.isnan(auc) else auc), losses


def _tag_shadow(
    client: MlflowClient, name: str, version: str, rows: int, shadow: Any, margin: float
) -> None:
    verdict = "too_few_rows" if shadow is None else judge(shadow, margin)
    tags = {"shadow.rows": str(rows), "shadow.verdict": verdict}
    if shadow is not None:
        tags["shadow.difference"] = f"{shadow.estimate:+.5f}"
        tags["shadow.interval"] = f"[{shadow.lower:+.5f}, {shadow.upper:+.5f}]"
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


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
    """Compare canary and champion on the labelled rows each served (and, from its
    shadow, on the same rows); ``canary.test`` says how (module docstring). ``labels``
    carry ``batch_id``: rows are keyed by (batch, id)."""
    c = config.canary
    now = now or datetime.now(UTC)
    canary = current_alias(client, name, CANARY)
    stamp = now.isoformat()
    if canary is None:
        return CanaryReview(
            name, "no_canary", "no canary is serving", None, None, None, None, c.margin,
            c.confidence, None, stamp, c.test,
        )  # fmt: skip
    since = client.get_model_version(name, canary).tags.get("alias.canary.at")
    age = (now - datetime.fromisoformat(since)).total_seconds() / 3600 if since else None
    # the comparison is with the champion now: rows served beside an earlier one are
    # another comparison (its evidence is kept aside, see record_batches)
    champion = current_alias(client, name, CHAMPION)
    served, batch_rows = _served_rows(store, spec.name, canary, spec.id_column, champion)
    keys = ["batch_id", spec.id_column]  # predictions meet labels on (batch, id)
    missing = {*keys, spec.target} - set(labels.columns)
    if missing:
        raise RegistryError(f"labels lack column(s) {sorted(missing)} (rows are (batch, id))")
    # the share and minimum rows of this data set: config, spec, else the batch sizes seen
    c = canary_rules(config, spec, batch_rows or [len(labels)])
    as_text = dict.fromkeys(keys, str)  # scoring stores ids as text (routing.py)
    labels = labels[[*keys, spec.target]].astype(as_text)
    joined = served.astype(as_text).merge(labels, on=keys, how="inner")
    joined = joined.dropna(subset=[spec.target])
    shadowed = joined[joined["phase"] == "shadow"]
    joined = joined[joined["phase"] == "canary"]
    is_canary = (joined["alias"] == CANARY).to_numpy()
    champion_versions = sorted(set(joined.loc[~is_canary, "model_version"].astype(str)))
    champ_label = ",".join(champion_versions) or (champion or "?")
    arm_c, loss_c = _arm(joined[is_canary], canary, spec.target)
    arm_h, loss_h = _arm(joined[~is_canary], champ_label, spec.target)
    evidence = record_batches(
        store,
        name,
        canary,
        {
            str(b): Moments.of(
                _losses(rows, spec.target, SHADOW_COLUMN) - _losses(rows, spec.target)
            )
            for b, rows in shadowed.groupby("batch_id")
        },
        {
            str(b): (
                Moments.of(_losses(rows[rows["alias"] == CANARY], spec.target)),
                Moments.of(_losses(rows[rows["alias"] != CANARY], spec.target)),
            )
            for b, rows in joined.groupby("batch_id")
        },
        champion=champion or "",
    )
    shadow = shadow_interval(evidence, c)
    # the horizon's count: labelled batches since the canary's gate, shadow or serving,
    # each batch once (a re-run review replaces its batch's entry)
    batches = len(set(evidence.shadow) | set(evidence.canary))
    if len(shadowed):  # the shadow's evidence on the version (its model card shows it)
        _tag_shadow(client, name, canary, evidence.shadow_total().n, shadow, c.margin)
    if c.test == "sequential":  # the arms over every batch so far (AUC: this review's rows)
        cum_c, cum_h = evidence.canary_totals()
        arm_c = Arm(canary, cum_c.n, cum_c.mean, arm_c.auc)
        arm_h = Arm(champ_label, cum_h.n, cum_h.mean, arm_h.auc)

    def result(outcome: Outcome, reason: str, d: Any = None, ci: Any = None) -> CanaryReview:
        # when a person decides: sequential, after horizon_batches labelled batches (the
        # clock of a test that looks once per batch: monthly labels would make any hours
        # limit fire at the second review); fixed, after max_wait_hours
        undecided = outcome == "inconclusive"
        if undecided and c.test == "sequential" and batches >= c.horizon_batches:
            outcome = "needs_decision"
            reason += (
                f"; undecided after {batches} labelled batches (horizon {c.horizon_batches}): "
                "a person decides (python -m pipeline canary promote|reject)"
            )
        elif undecided and c.test == "fixed" and age is not None and age >= c.max_wait_hours:
            outcome = "needs_decision"
            reason += (
                f"; the canary has waited {age:.0f} h (limit {c.max_wait_hours:g} h): "
                "a person decides (python -m pipeline canary promote|reject)"
            )
        return CanaryReview(
            name, outcome, reason, arm_c, arm_h, d, ci, c.margin, c.confidence, age, stamp,
            c.test, evidence.shadow_total().n,
            None if shadow is None else shadow.estimate,
            None if shadow is None else (shadow.lower, shadow.upper),
            batches, store.uri(evidence_key(name, canary)), evidence.champion or None,
        )  # fmt: skip

    if c.test == "fixed":
        rows = (arm_c.rows, arm_h.rows)
        return result(*fixed_verdict(rows, loss_c, loss_h, canary, c))
    return result(*sequential_verdict(evidence, shadow, c))


# ------------------------------------------------------------------------------ acting


def _stamp(iso: str) -> str:
    """A timestamp as one key-safe component."""
    return re.sub(r"[^0-9A-Za-z]", "", iso)[:26] or "t"


def apply_review(
    client: MlflowClient,
    store: ObjectStore,
    config: PipelineConfig,
    review: CanaryReview,
    *,
    hold: bool = False,
) -> PromotionResult:
    """Act on a review (and record it in the store and on the canary version).

    ``hold``: a ``success`` promotes nothing and returns ``held``: a person approves
    first (``canary.require_approval``, :mod:`pipeline.steps.promotion.approval`).
    While that approval waits (``approval.status`` pending), a later review neither
    holds nor asks again, nor alerts that a decision is needed: it records its evidence
    (which keeps accumulating) and returns ``awaiting_approval``; only a ``failure``
    acts, rolling the canary back (a person's later answer then finds it gone)."""
    if review.canary is None:
        return PromotionResult("kept", review.model, None, review.reason)
    version = review.canary.version
    key = join_key(
        "reports",
        "canary",
        check_id(review.model, "model name"),
        f"v{version}-{_stamp(review.reviewed_at)}-{uuid.uuid4().hex[:8]}.json",
    )
    put_json(store, key, asdict(review))
    client.set_model_version_tag(review.model, version, "canary.last_review", store.uri(key))
    client.set_model_version_tag(review.model, version, "canary.last_outcome", review.outcome)
    waiting = client.get_model_version(review.model, version).tags.get("approval.status")
    if waiting == PENDING and review.outcome != "failure":
        why = f"held for a person's approval already (asked once): {review.reason}"
        return PromotionResult("awaiting_approval", review.model, version, why)
    if review.outcome == "success" and hold:
        client.set_model_version_tag(review.model, version, "approval.status", PENDING)
        return PromotionResult("held", review.model, version, f"awaiting approval: {review.reason}")
    if review.outcome == "success":
        return promote(client, store, config, review.model, version, why=review.reason)
    if review.outcome == "failure":
        return reject_canary(client, store, config, review.model, version, why=review.reason)
    if review.outcome == "needs_decision":
        raise_alert(
            config,
            store,
            AlertKind.CANARY_UNDECIDED,
            f"{review.model}-v{version}",
            f"canary {review.model} v{version} needs a decision",
            review.describe(),
            {"model": review.model, "version": version, "age_hours": review.canary_age_hours},
        )
    return PromotionResult("kept", review.model, version, review.reason)
