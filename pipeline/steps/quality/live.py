"""Live quality: the champion's stored predictions joined with the labels that arrived.

ROC AUC (:func:`training.engine.metrics.roc_auc`, the same implementation the gate and
the training job use) below ``quality.slo`` on at least ``quality.min_rows``
labelled rows is the label-side trigger of a retrain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from pipeline.base.layout import committed_versions, merged_labels, predictions_key
from pipeline.base.sections import QualityConfig
from pipeline.base.store import ObjectNotFound, ObjectStore, get_frame
from training.api import DataError, DatasetSpec, roc_auc

__all__ = ["PREDICTION_COLUMN", "QualitySummary", "check_quality", "live_quality"]

PREDICTION_COLUMN = "score"  # the champion's predicted probability of the positive class


@dataclass(frozen=True)
class QualitySummary:
    """Live quality of one model version on the labelled rows of one batch."""

    dataset: str
    batch_id: str
    model_version: str
    metric: str
    value: float | None
    slo: float
    rows: int
    enough_rows: bool
    below_slo: bool
    note: str = ""

    def message(self) -> str:
        if self.value is None:
            return f"live {self.metric} of {self.model_version} on {self.batch_id}: {self.note}"
        verdict = "below" if self.below_slo else "meets"
        extra = f" ({self.note})" if self.note else ""
        return (
            f"live {self.metric} of model {self.model_version} on {self.dataset}/{self.batch_id}: "
            f"{self.value:.4f} on {self.rows:,} labelled rows, {verdict} the SLO {self.slo:g}"
            f"{extra}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def live_quality(
    predictions: pd.DataFrame,
    labels: pd.DataFrame,
    spec: DatasetSpec,
    config: QualityConfig | None = None,
    *,
    batch_id: str,
    model_version: str,
) -> QualitySummary:
    """ROC AUC of ``predictions`` (id + ``score``) against ``labels`` (id + target)."""
    config = config or QualityConfig()
    for frame, what, needed in (
        (predictions, "predictions", [spec.id_column, PREDICTION_COLUMN]),
        (labels, "labels", [spec.id_column, spec.target]),
    ):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise DataError(f"{what} for {batch_id} lack column(s) {missing}")
    # one batch's predictions and labels: the row key (batch, id) is the id here; as text,
    # as scoring stores it (an integer id column of the labels still matches)
    key = {spec.id_column: str}
    joined = (
        predictions[[spec.id_column, PREDICTION_COLUMN]]
        .astype(key)
        .merge(labels[[spec.id_column, spec.target]].astype(key), on=spec.id_column, how="inner")
    )
    joined = joined.dropna(subset=[PREDICTION_COLUMN, spec.target])
    rows = len(joined)

    def summary(value: float | None, note: str) -> QualitySummary:
        enough = rows >= config.min_rows and value is not None
        return QualitySummary(
            dataset=spec.name,
            batch_id=batch_id,
            model_version=model_version,
            metric=config.metric,
            value=value,
            slo=config.slo,
            rows=rows,
            enough_rows=enough,
            below_slo=bool(enough and value is not None and value < config.slo),
            note=note,
        )

    if rows == 0:
        return summary(None, "no prediction has a label yet")
    if joined[spec.target].nunique() < 2:
        return summary(None, f"the {rows:,} labelled rows hold one class only: AUC undefined")
    value = roc_auc(joined[spec.target].to_numpy(), joined[PREDICTION_COLUMN].to_numpy())
    note = "" if rows >= config.min_rows else f"fewer than {config.min_rows} rows: no verdict"
    return summary(round(value, 6), note)


def check_quality(
    store: ObjectStore,
    spec: DatasetSpec,
    batch_id: str,
    model_version: str,
    *,
    labels_version: int | None = None,
    config: QualityConfig | None = None,
) -> QualitySummary:
    """Live quality from the stored predictions of ``model_version`` and the batch's labels."""
    versions = committed_versions(store, spec.name, batch_id, "labels")
    if not versions:
        raise DataError(f"no labels for {spec.name}/{batch_id} yet (ingest them first)")
    version = labels_version if labels_version is not None else versions[-1]
    labels = merged_labels(store, spec.name, batch_id, spec.id_column, upto=version)
    try:
        predictions = get_frame(store, predictions_key(spec.name, batch_id, model_version))
    except ObjectNotFound:
        raise DataError(
            f"no predictions of model {model_version} for {spec.name}/{batch_id} in "
            f"{store.description} ({predictions_key(spec.name, batch_id, model_version)})"
        ) from None
    return live_quality(
        predictions, labels, spec, config, batch_id=batch_id, model_version=model_version
    )
