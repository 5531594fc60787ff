"""Routing rows between champion and canary, and scoring a batch with both.

**Routing.** A row goes to the canary when ``blake2b(salt, row id)`` read as a
fraction of 2**64 is below the canary's share: stable across runs, machines and
Python versions, so a row re-scored after a retry lands on the same model,
and independent of row order. Every prediction records the version that made
it and the alias it served under.

**Isolation and guardrails.** The champion scores first and every row; the canary
scores after it, guarded: one that cannot load or score, or whose outputs breach a
guardrail before any label (:mod:`pipeline.steps.canary.guardrails`), is rolled back
with an alert and the champion serves the batch.

**Shadow.** After its gate, a new canary first scores ``shadow_batches`` whole
batches unserved beside the champion (:mod:`pipeline.steps.canary.shadow`); its paired
evidence rolls it back before it serves, or ends the shadow early
(:func:`~pipeline.steps.canary.shadow.in_shadow`). The review of what it served:
:mod:`pipeline.steps.canary.review`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline.base.layout import predictions_key
from pipeline.base.spark import is_spark
from pipeline.base.store import ObjectStore, get_frame, put_frame
from pipeline.steps.canary.guardrails import GuardrailReport, check_outputs
from pipeline.steps.canary.scores import (
    ScoringSummary,
    canary_failure,
    record_guardrails,
    route_to_canary,
    scoring_name,
)
from pipeline.steps.canary.shadow import SHADOW_COLUMN, in_shadow, shadow_name
from pipeline.steps.promotion.actions import reject_canary
from pipeline.steps.promotion.rules import canary_rules
from pipeline.steps.quality.live import PREDICTION_COLUMN
from pipeline.steps.registry.aliases import CANARY, CHAMPION, current_alias

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from pipeline.base.config import PipelineConfig
    from training.api import DatasetSpec

__all__ = [
    "ScoringSummary",
    "record_guardrails",
    "route_to_canary",
    "score_batch",
    "scoring_name",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ scoring


def _canary_scores(name: str, canary: str, uri: str, rows: pd.DataFrame) -> tuple[Any, str]:
    """The canary's probabilities for ``rows``, or (None, why) when it cannot load or
    score them: whatever the canary does, the champion's predictions still land."""
    from pipeline.steps.registry.scoring import load_scorer, predict_probability

    try:
        return predict_probability(load_scorer(name, canary, uri), rows), ""
    except Exception as exc:  # any failure of the canary's: isolated, rolled back below
        log.exception("canary v%s could not score", canary)
        return None, canary_failure(canary, exc)


def score_batch(
    client: MlflowClient,
    store: ObjectStore,
    config: PipelineConfig,
    spec: DatasetSpec,
    name: str,
    batch_id: str,
    features: pd.DataFrame,
) -> ScoringSummary:
    """Score a batch with the champion and (for its share of rows) the canary; while
    the canary is in its shadow phase (:func:`~pipeline.steps.canary.shadow.in_shadow`) the
    champion serves every row and the canary scores every row unserved (``shadow_score``).

    **Isolation**: the champion scores every row first (the canary's rows too, unserved:
    the guardrails' paired reference); the canary scores after it, guarded: a canary
    that cannot load or score, or whose outputs breach a guardrail
    (:mod:`pipeline.steps.canary.guardrails`), is rolled back with an alert and the
    champion serves the whole batch. A champion that cannot score fails the step.

    Keyed by batch and by the serving versions: scoring the same batch again
    with the same models reuses what was written (a retried task).
    """
    import numpy as np
    import pandas as pd

    from pipeline.steps.registry.scoring import load_scorer, predict_probability

    champion = current_alias(client, name, CHAMPION)
    if champion is None:
        rows = features.count() if is_spark(features) else len(features)
        return ScoringSummary(spec.name, batch_id, rows, None, None, 0, None, False)
    canary = current_alias(client, name, CANARY)
    names = [scoring_name(champion, canary)] + ([shadow_name(champion, canary)] if canary else [])
    for done_key in (predictions_key(spec.name, batch_id, n) for n in names):
        if store.exists(done_key):
            done = get_frame(store, done_key)
            canary_rows = int((done["alias"] == CANARY).sum())
            shadow_rows = int(done[SHADOW_COLUMN].notna().sum()) if SHADOW_COLUMN in done else 0
            return ScoringSummary(
                spec.name, batch_id, len(done), champion, canary, canary_rows, done_key, True,
                shadow_rows,
            )  # fmt: skip
    if is_spark(features):  # data.engine: spark; the same steps, the rows stay in Spark
        from pipeline.steps.canary.spark_routing import score_in_spark

        return score_in_spark(
            client, store, config, spec, name, batch_id, features, champion, canary
        )
    ids = features[spec.id_column].astype(str).to_numpy()
    rules = canary_rules(config, spec, [len(features)])
    uri = client.tracking_uri
    stamp = datetime.now(UTC).isoformat()
    base = predict_probability(load_scorer(name, champion, uri), features)
    rolled_back = None
    shadow = bool(canary) and in_shadow(store, rules, spec.name, name, str(canary))
    to_canary = np.zeros(len(features), dtype=bool)
    if canary and not shadow:
        to_canary = route_to_canary(ids, rules.share, rules.salt)
    scored = None
    if canary and (shadow or to_canary.any()):
        rows = features if shadow else features.loc[to_canary]
        scored, failure = _canary_scores(name, canary, uri, rows)
        if scored is None:
            rolled_back = failure
        else:
            report = GuardrailReport(
                name, canary, champion, batch_id, "shadow" if shadow else "canary", len(rows),
                check_outputs(
                    scored, base if shadow else base[to_canary], rules,
                    routed=None if shadow else (int(to_canary.sum()), len(features)),
                ),
            )  # fmt: skip
            rolled_back = record_guardrails(client, store, report)
    if rolled_back is not None:  # alias removed, tagged, alerted: the champion serves every row
        log.warning("rolling canary v%s back before labels: %s", canary, rolled_back)
        reject_canary(client, store, config, name, canary, why=rolled_back)
        canary, shadow, scored = None, False, None
        to_canary = np.zeros(len(features), dtype=bool)
    if canary and shadow:
        key = predictions_key(spec.name, batch_id, shadow_name(champion, canary))
        frame = pd.DataFrame(
            {
                spec.id_column: ids,
                PREDICTION_COLUMN: base,
                "model_version": champion,
                "alias": CHAMPION,
                "scored_at": stamp,
                SHADOW_COLUMN: scored,
                "shadow_version": canary,
            }
        )
        put_frame(store, key, frame)
        log.info("scored %s: %d rows, canary v%s in shadow", batch_id, len(frame), canary)
        return ScoringSummary(
            spec.name, batch_id, len(frame), champion, canary, 0, key, False, len(frame)
        )
    key = predictions_key(spec.name, batch_id, scoring_name(champion, canary))
    probability = np.array(base, dtype=np.float64)
    if scored is not None:
        probability[to_canary] = scored
    frame = pd.DataFrame(
        {
            spec.id_column: ids,
            PREDICTION_COLUMN: probability,
            "model_version": [canary if c else champion for c in to_canary],
            "alias": [CANARY if c else CHAMPION for c in to_canary],
            "scored_at": stamp,
        }
    )
    put_frame(store, key, frame)
    log.info("scored %s: %d rows (%d by canary v%s)", batch_id, len(frame), to_canary.sum(), canary)
    return ScoringSummary(
        spec.name, batch_id, len(frame), champion, canary, int(to_canary.sum()), key, False,
        rolled_back=rolled_back,
    )  # fmt: skip
