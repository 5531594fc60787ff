"""When labels arrive: the champion's live quality, and the canary review."""

from __future__ import annotations

import logging

import pandas as pd

from pipeline.base.layout import committed_versions, merged_labels
from pipeline.base.ledger import REVIEWED, record_step
from pipeline.base.store import get_frame, join_key
from pipeline.flow.cards import publish
from pipeline.flow.env import Env
from pipeline.flow.monitor import retrain_request
from pipeline.flow.records import Decision, Record, ReviewOutcome
from pipeline.steps.canary.review import CanaryReview, apply_review
from pipeline.steps.canary.review import review_canary as judge
from pipeline.steps.promotion.actions import PromotionResult
from pipeline.steps.quality.decision import decide_retrain
from pipeline.steps.quality.live import QualitySummary, live_quality
from pipeline.steps.registry.aliases import CANARY, CHAMPION, current_alias
from pipeline.steps.registry.audit import check_aliases
from training.api import push_live_quality

__all__ = [
    "QualityOutcome",
    "predictions",
    "quality",
    "quality_summary",
    "review",
    "review_canary",
]

log = logging.getLogger(__name__)


class QualityOutcome(Record):
    """The champion's live quality on a batch's labels (None: nothing was scored) and
    the decision it led to."""

    batch_id: str
    summary: QualitySummary | None
    decision: Decision


def predictions(env: Env, batch_id: str) -> pd.DataFrame | None:
    """Every prediction stored for the batch (any serving pair), or None."""
    prefix = join_key("predictions", env.dataset, batch_id)
    keys = [k for k in env.store.list(prefix) if k.endswith("predictions.parquet")]
    if not keys:
        return None
    frame = pd.concat([get_frame(env.store, k) for k in sorted(keys)], ignore_index=True)
    # a batch scored again (new serving models) counts once: its latest scoring
    frame = frame.sort_values("scored_at", kind="stable")
    return frame.drop_duplicates(env.spec.id_column, keep="last")


def quality_summary(env: Env, batch_id: str) -> QualitySummary | None:
    """The steps' :class:`~pipeline.steps.quality.live.QualitySummary` of the champion on
    the batch's labelled rows it served, or None when nothing was scored."""
    scored = predictions(env, batch_id)
    if scored is None:
        return None
    served = scored[scored["alias"] == CHAMPION]
    version = ",".join(sorted(set(served["model_version"].astype(str)))) or "none"
    return live_quality(
        served,
        merged_labels(env.store, env.dataset, batch_id, env.spec.id_column),
        env.spec,
        env.config.quality,
        batch_id=batch_id,
        model_version=version,
    )


def quality(env: Env, batch_id: str) -> QualityOutcome:
    """Live AUC of the champion on the labelled rows it served; below the SLO it
    requests a retrain (the label-side trigger), with the one decision's reason."""
    summary = quality_summary(env, batch_id)
    if summary is None:
        reason = "no predictions for this batch"
        decision = Decision(retrain=False, trigger=None, reason=reason, batch_id=batch_id)
        return QualityOutcome(batch_id=batch_id, summary=None, decision=decision)
    _push(env, summary)
    decided = decide_retrain(quality=summary)
    if decided.retrain:
        decision = retrain_request(env, "quality", decided.reason, batch_id)
    else:
        decision = Decision(retrain=False, trigger=None, reason=decided.reason, batch_id=batch_id)
    return QualityOutcome(batch_id=batch_id, summary=summary, decision=decision)


def _push(env: Env, summary: QualitySummary) -> None:
    """The verdict to the Pushgateway, where the SLO alert and the dashboard read it
    (``cosine_retrain_live_auc``, ``..._slo``, ``..._rows``); never fails the step."""
    url = env.config.pushgateway_url
    if not url or summary.value is None:
        return
    if push_live_quality(url, auc=summary.value, slo=summary.slo, rows=summary.rows):
        log.info("live quality of %s pushed to %s", summary.model_version, url)


def review_canary(
    env: Env, batch_ids: list[str], *, hold: bool | None = None
) -> tuple[CanaryReview, PromotionResult]:
    """Compare canary and champion on the labels of these batches, then act (promote,
    roll back or wait): the steps' CanaryReview and PromotionResult. A decision adds a
    revision to the version's card. ``hold`` (default ``canary.require_approval``, for
    every entry alike: the DAG, the CLI): a promotion waits for a person's approval."""
    if hold is None:
        hold = env.config.canary.require_approval
    check_aliases(env.client, env.store, env.config, env.model)  # the trail agrees first
    # keyed by (batch, id): an id may recur in every batch (the spec's id_scope)
    labels = pd.concat(
        [
            merged_labels(env.store, env.dataset, b, env.spec.id_column).assign(batch_id=b)
            for b in batch_ids
        ],
        ignore_index=True,
    )
    result = judge(env.client, env.store, env.config, env.spec, env.model, labels)
    action = apply_review(env.client, env.store, env.config, result, hold=hold)
    if action.action in ("promoted", "rejected", "held"):
        publish(env, action.version, f"canary review: {action.action}")
    return result, action


def review(env: Env, batch_ids: list[str], *, hold: bool | None = None) -> ReviewOutcome:
    """:func:`review_canary` as the canary review's record; the ledger records each
    batch as reviewed (with the labels version the review read)."""
    result, action = review_canary(env, batch_ids, hold=hold)
    for b in batch_ids:
        labels = committed_versions(env.store, env.dataset, b, "labels")
        detail = f"{result.outcome} -> {action.action}"
        record_step(env.store, env.dataset, b, REVIEWED, version=labels[-1], detail=detail)
    return ReviewOutcome(
        outcome=result.outcome,
        reason=result.reason,
        action=action.action,
        version=action.version,
        champion=current_alias(env.client, env.model, CHAMPION),
        canary=current_alias(env.client, env.model, CANARY),
        method=result.method,
        interval=None if result.interval is None else list(result.interval),
        shadow_rows=result.shadow_rows,
        shadow_interval=None if result.shadow_interval is None else list(result.shadow_interval),
        evidence_uri=result.evidence_uri,
        compared_with=result.compared_with,
        batches=result.batches,
    )
