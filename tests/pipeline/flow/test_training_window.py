"""A retrain trains only on validated batches, and says which it left out and why."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline import flow
from pipeline.steps.landing.ingest import flights_frames, ingest_frame
from pipeline.steps.landing.labels import ingest_labels
from pipeline.steps.quality.validation import ValidationFailed
from tests.pipeline.flow.retrain_support import retrain_env
from training.api import BATCH_COLUMN


def _land(env: flow.Env, month: int, *, bad: bool = False) -> pd.DataFrame:
    """3,000 flights of the month as batch 2013-MM, and their labels (``bad``: 200 of
    them from an airport the spec does not allow)."""
    _, features, labels = flights_frames(env.spec, month)
    features = features.head(3000).copy()
    if bad:
        features.loc[:199, "origin"] = "XXX"
    batch = f"2013-{month:02d}"
    ingest_frame(env.store, env.spec, features, batch)
    ids = features[env.spec.id_column]
    ingest_labels(env.store, env.spec, labels[labels[env.spec.id_column].isin(ids)], batch)
    return features


def test_the_window_leaves_out_quarantined_and_unvalidated_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env = retrain_env(tmp_path, monkeypatch, COSINE_RETRAIN_RETRAIN__WINDOW_BATCHES="3")
    kept = {}
    for month in (1, 3):
        kept[f"2013-{month:02d}"] = _land(env, month)
        flow.validate(env, f"2013-{month:02d}")
    _land(env, 2, bad=True)
    with pytest.raises(ValidationFailed):
        flow.validate(env, "2013-02")  # quarantined
    _land(env, 4)  # labelled, never validated (its event never reached the monitor)

    with caplog.at_level(logging.WARNING, logger="pipeline.flow.retrain"):
        plan = flow.plan_retrain(env, flow.RetrainRequest(trigger="manual", reasons=["test"]))
    assert not plan.skip, plan
    assert plan.window == ["2013-01", "2013-03"]
    assert plan.left_out == {
        "2013-02": "quarantined: v1 failed validation",
        "2013-04": "v1 not validated yet (the drift monitor catches it up)",
    }
    logged = [r.getMessage() for r in caplog.records]
    assert "batch 2013-02 left out of the training window: quarantined: v1 failed validation" in (
        logged
    )
    # the exported window holds exactly the validated batches' rows
    window = flow.export_window(env, plan)
    features = pd.read_parquet(window.features)
    expected = pd.concat(kept.values(), ignore_index=True)
    assert window.rows == len(expected)
    assert sorted(features[env.spec.id_column]) == sorted(expected[env.spec.id_column])
    # one labelled file a batch, in the row groups the training job streams
    files = sorted(Path(window.features).glob("*.parquet"))
    assert [pd.read_parquet(f)[BATCH_COLUMN].unique().tolist() for f in files] == [
        ["2013-01"],
        ["2013-03"],
    ]
    assert window.labels is None
    assert features[env.spec.target].notna().all()
    assert {pq.ParquetFile(f).metadata.row_group(0).num_rows for f in files} == {3000}
    config = flow.train_config(env, plan, window)
    assert (config.data.features, config.data.labels) == (window.features, None)

    # nothing validated: nothing to train, and the plan says why
    empty = retrain_env(tmp_path / "other", monkeypatch)
    _land(empty, 5)
    plan = flow.plan_retrain(empty, flow.RetrainRequest(trigger="manual"))
    assert plan.skip
    assert plan.reason == "no validated labelled batch yet: nothing to train on"
    assert plan.left_out == {"2013-05": "v1 not validated yet (the drift monitor catches it up)"}
