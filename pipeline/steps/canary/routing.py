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

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pipeline.base.layout import predictions_key
from pipeline.base.records import Stored
from pipeline.base.spark import is_spark
from pipeline.base.store import ObjectStore, get_frame, put_frame
from pipeline.steps.canary.guardrails import GuardrailReport, check_outputs, store_report
from pipeline.steps.canary.shadow import SHADOW_COLUMN, in_shadow, shadow_name
from pipeline.steps.promotion.actions import reject_canary
from pipeline.steps.promotion.rules import canary_rules
from pipeline.steps.quality.live import PREDICTION_COLUMN
from pipeline.steps.registry.aliases import CANARY, CHAMPION, current_alias

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from pipeline.base.config import PipelineConfig
    from training.api import DatasetSpec

__all__ = ["ScoringSummary", "route_to_canary", "score_batch"]

log = logging.getLogger(__name__)


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
class ScoringSummary(Stored):
    """Who scored the batch: the champion, and the canary for its share of the rows
    (or, in its shadow phase, for every row, unserved)."""

    dataset: str
    batch_id: str
    rows: int
    champion_version: str | None
    canary_version: str | None
    canary_rows: int
    key: str | None
    reused: bool
    shadow_rows: int = 0  # rows the canary scored unserved (its shadow phase)
    # the canary was rolled back before labels (could not score, or a guardrail): why
    rolled_back: str | None = None

    def describe(self) -> str:
        if self.champion_version is None:
            return f"{self.batch_id}: no champion yet, nothing scored"
        canary = (
            f", canary v{self.canary_version} scored {self.canary_rows}"
            if self.canary_version
            else ""
        )
        if self.shadow_rows:
            canary = f", v{self.canary_version} scored all {self.shadow_rows} in shadow (unserved)"
        again = " (already scored: reused)" if self.reused else ""
        if self.rolled_back:
            again += f"; canary rolled back: {self.rolled_back}"
        return (
            f"{self.batch_id}: {self.rows} rows, champion v{self.champion_version}{canary}{again}"
        )


def _scoring_name(champion: str, canary: str | None) -> str:
    return f"champion-v{champion}" + (f"_canary-v{canary}" if canary else "")


class _Rows:
    """A batch as the scoring step needs it, pandas or Spark (``data.engine``): its
    length, its ids as text, and a model's probabilities for all rows or a mask's."""

    def __init__(self, features: Any, id_column: str) -> None:
        from pipeline.steps.registry.spark_scoring import SparkRows

        self.features = features
        self.spark = SparkRows(features, id_column) if is_spark(features) else None
        self.ids = self.spark.ids if self.spark else features[id_column].astype(str).to_numpy()

    def probabilities(self, name: str, version: str, uri: str, mask: Any = None) -> Any:
        from pipeline.steps.registry.scoring import load_scorer, predict_probability

        if self.spark is not None:
            return self.spark.probabilities(name, version, uri, mask)
        rows = self.features if mask is None else self.features.loc[mask]
        return predict_probability(load_scorer(name, version, uri), rows)

    def release(self) -> None:
        if self.spark is not None:
            self.spark.release()


def _canary_scores(
    name: str, canary: str, uri: str, batch: _Rows, mask: Any = None
) -> tuple[Any, str]:
    """The canary's probabilities for the batch's rows (or ``mask``'s), or (None, why)
    when it cannot load or score them: whatever the canary does, the champion's
    predictions still land."""
    from pipeline.steps.registry.scoring import describe_serving_error

    try:
        return batch.probabilities(name, canary, uri, mask), ""
    except Exception as exc:  # any failure of the canary's: isolated, rolled back below
        log.exception("canary v%s could not score", canary)
        text = describe_serving_error(exc).splitlines()[0][:500]
        return None, f"canary v{canary} could not load or score: {type(exc).__name__}: {text}"


def _record_guardrails(
    client: MlflowClient, store: ObjectStore, report: GuardrailReport
) -> str | None:
    """Store the batch's guardrails on the canary version: the breach's reason, or None
    when every guardrail held."""
    key = store_report(store, report)
    version = report.canary_version
    client.set_model_version_tag(report.model, version, "guardrails.last", store.uri(key))
    client.set_model_version_tag(report.model, version, "guardrails.status", report.describe())
    return None if report.passed else report.reason()


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
    champion = current_alias(client, name, CHAMPION)
    if champion is None:
        rows = features.count() if is_spark(features) else len(features)
        return ScoringSummary(spec.name, batch_id, rows, None, None, 0, None, False)
    canary = current_alias(client, name, CANARY)
    names = [_scoring_name(champion, canary)] + ([shadow_name(champion, canary)] if canary else [])
    for done_key in (predictions_key(spec.name, batch_id, n) for n in names):
        if store.exists(done_key):
            done = get_frame(store, done_key)
            canary_rows = int((done["alias"] == CANARY).sum())
            shadow_rows = int(done[SHADOW_COLUMN].notna().sum()) if SHADOW_COLUMN in done else 0
            return ScoringSummary(
                spec.name, batch_id, len(done), champion, canary, canary_rows, done_key, True,
                shadow_rows,
            )  # fmt: skip
    batch = _Rows(features, spec.id_column)
    try:
        return _score(client, store, config, spec, name, batch_id, batch, champion, canary)
    finally:
        batch.release()


def _score(
    client: MlflowClient,
    store: ObjectStore,
    config: PipelineConfig,
    spec: DatasetSpec,
    name: str,
    batch_id: str,
    batch: _Rows,
    champion: str,
    canary: str | None,
) -> ScoringSummary:
    import numpy as np
    import pandas as pd

    ids = batch.ids
    rules = canary_rules(config, spec, [len(ids)])
    uri = client.tracking_uri
    stamp = datetime.now(UTC).isoformat()
    base = batch.probabilities(name, champion, uri)
    rolled_back = None
    shadow = bool(canary) and in_shadow(store, rules, spec.name, name, str(canary))
    to_canary = np.zeros(len(ids), dtype=bool)
    if canary and not shadow:
        to_canary = route_to_canary(ids, rules.share, rules.salt)
    scored = None
    if canary and (shadow or to_canary.any()):
        scored, failure = _canary_scores(name, canary, uri, batch, None if shadow else to_canary)
        if scored is None:
            rolled_back = failure
        else:
            report = GuardrailReport(
                name, canary, champion, batch_id, "shadow" if shadow else "canary", len(scored),
                check_outputs(
                    scored, base if shadow else base[to_canary], rules,
                    routed=None if shadow else (int(to_canary.sum()), len(ids)),
                ),
            )  # fmt: skip
            rolled_back = _record_guardrails(client, store, report)
    if rolled_back is not None:  # alias removed, tagged, alerted: the champion serves every row
        log.warning("rolling canary v%s back before labels: %s", canary, rolled_back)
        reject_canary(client, store, config, name, canary, why=rolled_back)
        canary, shadow, scored = None, False, None
        to_canary = np.zeros(len(ids), dtype=bool)
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
    key = predictions_key(spec.name, batch_id, _scoring_name(champion, canary))
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
