"""Labels in parts: a later delivery adds the missing rows; a row already labelled
keeps its target unless a correction is landed with ``new_version`` (recorded, id by
id, in the new version's manifest); live quality covers every labelled row.

Loan applications (tests/pipeline/loans.py), not flights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.base.layout import labels_prefix, merged_labels, predictions_key, read_manifest
from pipeline.base.store import LocalStore, put_frame
from pipeline.steps.landing.ingest import ingest_frame
from pipeline.steps.landing.labels import ingest_labels
from pipeline.steps.landing.sources import BatchExists
from pipeline.steps.quality.live import check_quality
from tests.pipeline import loans
from training.api import roc_auc

BATCH = "2024-03"


@pytest.fixture
def landed(tmp_path: Path) -> tuple[LocalStore, object, pd.DataFrame]:
    """A landed month of loans and its full labels (not landed yet)."""
    store = LocalStore(tmp_path / "store")
    spec = loans.spec(tmp_path)
    features = loans.batch(BATCH, rows=1000, seed=4)
    ingest_frame(store, spec, features, BATCH)
    rng = np.random.default_rng(9)
    labels = pd.DataFrame(
        {"application_id": features["application_id"], "defaulted": rng.integers(0, 2, 1000)}
    )
    return store, spec, labels


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[["application_id", "defaulted"]].astype({"defaulted": "int64"})
    return frame.sort_values("application_id").reset_index(drop=True)


def test_a_second_delivery_adds_the_missing_rows(landed) -> None:  # type: ignore[no-untyped-def]
    store, spec, labels = landed
    first, rest = labels.iloc[:600], labels.iloc[600:]
    assert ingest_labels(store, spec, first, BATCH).ref.version == 1
    second = ingest_labels(store, spec, rest, BATCH)  # no --new-version: it only adds
    assert (second.status, second.ref.version) == ("landed", 2)
    assert "400 added, 0 corrected, 0 unchanged" in second.message
    merged = merged_labels(store, spec.name, BATCH, spec.id_column)
    pd.testing.assert_frame_equal(_sorted(merged), _sorted(labels))
    # the first part again, or rows already labelled the same: nothing lands
    again = ingest_labels(store, spec, pd.concat([first.iloc[:10], rest.iloc[:10]]), BATCH)
    assert again.status == "unchanged"
    assert merged_labels(store, spec.name, BATCH, spec.id_column, upto=1).shape[0] == 600


def test_a_correction_is_refused_then_recorded(landed) -> None:  # type: ignore[no-untyped-def]
    store, spec, labels = landed
    ingest_labels(store, spec, labels.iloc[:600], BATCH)
    fixed = labels.iloc[[3, 7, 11]].assign(defaulted=lambda f: 1 - f["defaulted"])
    with pytest.raises(BatchExists, match="changes the target of 3 labelled row"):
        ingest_labels(store, spec, fixed, BATCH)
    landed_ = ingest_labels(store, spec, fixed, BATCH, new_version=True)
    manifest = read_manifest(store, labels_prefix(spec.name, BATCH, landed_.ref.version))
    expected = [
        {"id": i, "old": int(1 - y), "new": int(y)}
        for i, y in zip(fixed["application_id"], fixed["defaulted"], strict=True)
    ]
    assert manifest["replaced"] == expected
    assert (manifest["replaced_rows"], manifest["added_rows"]) == (3, 0)
    merged = _sorted(merged_labels(store, spec.name, BATCH, spec.id_column))
    reference = labels.iloc[:600].copy()
    reference.loc[fixed.index, "defaulted"] = fixed["defaulted"]
    pd.testing.assert_frame_equal(merged, _sorted(reference))


def test_live_quality_covers_every_labelled_row(landed) -> None:  # type: ignore[no-untyped-def]
    store, spec, labels = landed
    rng = np.random.default_rng(2)
    score = np.clip(0.3 + 0.4 * labels["defaulted"] + rng.normal(0, 0.3, 1000), 0.01, 0.99)
    ids = labels["application_id"]
    # scoring stores every row of the batch (its ids as text)
    put_frame(
        store,
        predictions_key(spec.name, BATCH, "1"),
        pd.DataFrame({"application_id": ids.astype(str), "score": score}),
    )
    ingest_labels(store, spec, labels.iloc[:300], BATCH)
    ingest_labels(store, spec, labels.iloc[300:], BATCH)
    summary = check_quality(store, spec, BATCH, "1")
    assert summary.rows == 1000  # both parts, not the newest one alone
    assert summary.value == pytest.approx(round(roc_auc(labels["defaulted"].to_numpy(), score), 6))
