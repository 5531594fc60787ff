"""The canary review catches up: a labelled batch whose newest labels version the ledger
shows not reviewed joins the next review run, beside the batches its events name.

Batches and labels land through the flow (real files, the local store, the ledger the
landing records); ``reviewed`` is recorded as :func:`pipeline.flow.review` records it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline import flow
from pipeline.base.ledger import REVIEWED, record_step
from pipeline.flow.triggers import Event
from pipeline.steps.landing.ingest import flights_frames

BATCHES = ["2013-01", "2013-02", "2013-03"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> flow.Env:
    monkeypatch.delenv("COSINE_RETRAIN_CONFIG", raising=False)
    monkeypatch.delenv("COSINE_RETRAIN_DATASET_SPEC", raising=False)
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    env = flow.build_env()
    for batch in BATCHES:
        _, features, labels = flights_frames(env.spec, batch)
        features = features.head(300)
        labels = labels[labels[env.spec.id_column].isin(features[env.spec.id_column])]
        for kind, frame in (("features", features), ("labels", labels.head(200))):
            path = tmp_path / kind / f"{batch}.parquet"
            path.parent.mkdir(exist_ok=True)
            frame.to_parquet(path, index=False)
            flow.land(env, str(path), labels=kind == "labels", batch_id=batch, trusted=True)
        (tmp_path / "rest").mkdir(exist_ok=True)
        labels.iloc[200:].to_parquet(tmp_path / "rest" / f"{batch}.parquet", index=False)
    return env


def _reviewed(env: flow.Env, batch: str, version: int) -> None:
    record_step(env.store, env.dataset, batch, REVIEWED, version=version, detail="test")


def test_labelled_batches_not_reviewed_join_the_run(env: flow.Env) -> None:
    assert flow.unreviewed_batches(env) == BATCHES
    # February's event: January and March, whose events never came, join it
    assert flow.review_batches(env, [Event({"batch_id": "2013-02"})]) == BATCHES
    _reviewed(env, "2013-01", 1)
    _reviewed(env, "2013-02", 1)
    assert flow.review_batches(env, [Event({"batch_id": "2013-02"})]) == ["2013-02", "2013-03"]
    assert flow.review_batches(env, []) == ["2013-03"]
    _reviewed(env, "2013-03", 1)
    assert flow.review_batches(env, []) == []  # nothing to do (the DAG says so)
    # a person names a batch: that one alone, reviewed or not
    assert flow.review_batches(env, [], "2013-01") == ["2013-01"]


def test_a_new_labels_version_is_reviewed_again(env: flow.Env, tmp_path: Path) -> None:
    for batch in BATCHES:
        _reviewed(env, batch, 1)
    # February's remaining labels arrive (merged into labels v2): not reviewed yet
    rest = str(tmp_path / "rest" / "2013-02.parquet")
    landed = flow.land(env, rest, labels=True, batch_id="2013-02", trusted=True)
    assert landed.version == 2
    assert flow.unreviewed_batches(env) == ["2013-02"]
    _reviewed(env, "2013-02", 2)
    assert flow.unreviewed_batches(env) == []
