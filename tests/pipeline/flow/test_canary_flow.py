"""The shadow and the sequential canary through the real flow (``pipeline.flow``)
against a real MLflow server with real registered models: three labelled flights
batches are scored (``flow.score``: the first in shadow, then served) and reviewed
(``flow.labels.review_canary``); the evidence accumulates once per batch and every interval
matches one computed independently from the stored predictions and the labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline import flow
from pipeline.base.config import load_config
from pipeline.base.layout import read_labels
from pipeline.base.store import get_frame
from pipeline.flow.env import Env
from pipeline.flow.labels import review_canary
from pipeline.steps.landing.ingest import ingest_frame
from pipeline.steps.landing.labels import ingest_labels
from pipeline.steps.promotion.gate import gate_version
from pipeline.steps.registry.aliases import CANARY, current_alias
from pipeline.steps.registry.holdout import training_holdout
from pipeline.steps.registry.registration import register_training_run
from tests.pipeline.sequential_reference import cs_radius, log_loss_rows
from training.data import flights

PERMISSIVE = {"min_auc": 0.55, "min_slice_auc": 0.4, "slice_min_rows": 150, "max_auc_drop": 0.05}
MIN_ROWS = 300
ROWS = 3000


def test_shadow_then_canary_through_the_flow(
    mlflow_server: Any, trained_runs: Any, tmp_path: Path
) -> None:
    config = load_config(
        None,
        home=tmp_path,
        mlflow={"tracking_uri": mlflow_server.url, "model_name": "flow_seq"},
        gate=PERMISSIVE,
        canary={"min_rows": MIN_ROWS},
    )
    env = Env(config)
    spec = env.spec
    holdout = training_holdout(env.client, trained_runs["b"].run_id, spec)
    for run in ("b", "a"):  # b (hot, noisy) -> champion, a (calm) -> canary
        register_training_run(env.client, env.store, spec, trained_runs[run].run_id, name=env.model)
        gate_version(env.client, env.store, env.config, spec, env.model, holdout)
    canary = current_alias(env.client, env.model, CANARY)
    assert canary is not None
    alpha_each = (1 - config.canary.confidence) / 2  # shadow on: two sequences, alpha/2 each
    shadow_d: list[np.ndarray] = []
    arm_c: list[np.ndarray] = []
    arm_h: list[np.ndarray] = []
    reviews = []
    for i, month in enumerate((4, 5, 6)):
        batch = f"2013-{month:02d}"
        features, labels = flights.load_months([month])
        features = features.sample(ROWS, random_state=i).reset_index(drop=True)
        labels = labels[labels[spec.id_column].isin(features[spec.id_column])]
        ingest_frame(env.store, spec, features, batch)
        ingest_labels(env.store, spec, labels, batch)
        scored = flow.score(env, batch)
        assert (scored.shadow_rows > 0) == (i == 0)  # one batch in shadow, then served
        preds = get_frame(env.store, scored.key)
        rows = preds.merge(read_labels(env.store, spec.name, batch, 1), on=spec.id_column)
        y = rows[spec.target].to_numpy(dtype=float)
        if i == 0:
            assert scored.canary_rows == 0
            shadow_d.append(
                log_loss_rows(y, rows["shadow_score"].to_numpy())
                - log_loss_rows(y, rows["score"].to_numpy())
            )
        else:
            served = (rows["alias"] == CANARY).to_numpy()
            assert 0 < served.sum() == scored.canary_rows
            arm_c.append(log_loss_rows(y[served], rows["score"].to_numpy()[served]))
            arm_h.append(log_loss_rows(y[~served], rows["score"].to_numpy()[~served]))
        review, action = review_canary(env, [batch])
        reviews.append(review)
        again = review
        if action.action == "kept":  # a re-run task: nothing counted twice
            again, _ = review_canary(env, [batch])
        d = np.concatenate(shadow_d)
        assert review.shadow_rows == again.shadow_rows == d.size
        r = cs_radius(d, alpha_each, round(4 * MIN_ROWS / 0.2))
        assert review.shadow_interval == pytest.approx((d.mean() - r, d.mean() + r), rel=1e-9)
        if arm_c:
            lc, lh = np.concatenate(arm_c), np.concatenate(arm_h)
            assert review.canary.rows == again.canary.rows == lc.size
            assert review.batches == i + 1  # the shadow's batch and i served ones
            rc, rh = (
                cs_radius(lc, alpha_each / 2, 4 * MIN_ROWS),
                cs_radius(lh, alpha_each / 2, 4 * MIN_ROWS),
            )
            diff = lc.mean() - lh.mean()
            assert review.interval == pytest.approx((diff - rc - rh, diff + rc + rh), rel=1e-9)
        if action.action in ("promoted", "rejected"):
            break
    # the outcomes follow the rules (pipeline/steps/canary/verdicts.py) on those intervals
    margin = config.canary.margin
    for review in reviews:
        shadow_worse = review.shadow_interval[0] > margin
        if shadow_worse or (review.interval is not None and review.interval[0] > margin):
            assert review.outcome == "failure"
        elif review.interval is not None and review.interval[1] < margin:
            assert review.outcome == "success"
        elif review.canary.rows == 0:
            assert review.outcome == "inconclusive"
    print([(r.outcome, r.reason) for r in reviews])


def test_the_cli_scores_in_shadow_and_reviews_the_paired_evidence(
    mlflow_server: Any, trained_runs: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m pipeline canary score|review`` (in process): the first batch after
    the gate is scored in shadow, and the review prints the paired evidence."""
    import json

    import yaml

    from pipeline.apps.cli import main

    settings = {
        "home": str(tmp_path / "home"),
        "mlflow": {"tracking_uri": mlflow_server.url, "model_name": "cli_seq"},
        "gate": PERMISSIVE,
        "canary": {"min_rows": MIN_ROWS},
    }
    pipeline_yaml = tmp_path / "pipeline.yaml"
    pipeline_yaml.write_text(yaml.safe_dump(settings))
    cfg = ["--config", str(pipeline_yaml)]
    env = Env(load_config(pipeline_yaml))
    holdout = training_holdout(env.client, trained_runs["b"].run_id, env.spec)
    for run in ("b", "a"):
        register_training_run(
            env.client, env.store, env.spec, trained_runs[run].run_id, name=env.model
        )
        gate_version(env.client, env.store, env.config, env.spec, env.model, holdout)
    canary = current_alias(env.client, env.model, CANARY)
    features, labels = flights.load_months([4])
    features = features.sample(ROWS, random_state=0).reset_index(drop=True)
    ingest_frame(env.store, env.spec, features, "2013-04")
    ingest_labels(
        env.store, env.spec, labels[labels["flight_id"].isin(features["flight_id"])], "2013-04"
    )
    capsys.readouterr()
    assert main(["canary", "score", "2013-04", *cfg, "--json"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert (scored["shadow_rows"], scored["canary_rows"]) == (ROWS, 0)
    assert main(["canary", "review", "2013-04", *cfg]) == 0
    out = capsys.readouterr().out
    assert f"  shadow: {ROWS} paired rows, difference" in out
    assert "INCONCLUSIVE - non-inferior in shadow" in out  # a (calm) beats b (noisy)
    assert "the canary serves from the next batch scored" in out
    tags = env.client.get_model_version(env.model, canary).tags
    assert tags["shadow.rows"] == str(ROWS)
    # the canary_review DAG's record (flow.review), reviewed again: the same evidence
    record = flow.review(env, ["2013-04"])
    again = flow.ReviewOutcome.from_xcom(record.to_xcom())
    assert again == record
    assert (record.method, record.shadow_rows, record.interval) == ("sequential", ROWS, None)
    lo, hi = record.shadow_interval
    assert tags["shadow.interval"] == f"[{lo:+.5f}, {hi:+.5f}]"
    assert record.evidence_uri.endswith(f"reports/canary/cli_seq/v{canary}/evidence.json")
