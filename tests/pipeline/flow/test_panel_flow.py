"""A panel data set the project has never seen, through the real flow against a real
MLflow server: the same 900 people in every month, their ids recurring.

Two retrains on windows of several months (ids recur in each window) train, register
and pass the gate on their holdout (rebuilt with the (batch, id) join); the second
becomes the canary. Month 5 is scored in shadow and month 6 served; each month's labels
arrive in two parts. The stored evidence of each month equals what this test computes
from the stored predictions and the label files it wrote: every labelled (batch, id)
pair, once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import flow
from pipeline.base.config import load_config
from pipeline.base.store import get_frame, get_json
from pipeline.flow import retrain
from pipeline.flow.env import Env
from pipeline.flow.labels import review_canary
from pipeline.flow.records import RetrainRequest
from pipeline.steps.canary.shadow import evidence_key
from pipeline.steps.landing.ingest import ingest_frame
from pipeline.steps.landing.labels import ingest_labels
from pipeline.steps.registry.aliases import CANARY, CHAMPION, current_alias
from tests.pipeline.sequential_reference import log_loss_rows

PEOPLE = 900
MONTHS = [f"2024-{m:02d}" for m in range(1, 7)]
SPEC = {
    "name": "panel",
    "model_name": "panel_churn",
    "id_column": "person_id",
    "timestamp_column": "seen_at",
    "target": "churn",
    "row_count_min": 500,
    "row_count_max": 5000,
    "columns": {
        "person_id": {"role": "id"},
        "seen_at": {"role": "timestamp"},
        "region": {"role": "categorical", "allowed": ["n", "s", "e", "w"]},
        "income": {"role": "numeric", "min": 0, "max": 200},
        "hours": {"role": "numeric", "min": 0, "max": 80},
    },
}


def _months() -> dict[str, pd.DataFrame]:
    """Every person every month (another row order each time); churn depends on a
    person's lasting trait (seen through income) and the month's hours."""
    rng = np.random.default_rng(1)
    trait = rng.normal(0, 1, PEOPLE)
    region = rng.choice(["n", "s", "e", "w"], PEOPLE)
    out = {}
    for month in MONTHS:
        income = np.clip(rng.normal(50 + 10 * trait, 5), 0, 200)
        hours = rng.integers(0, 60, PEOPLE)
        logit = 1.2 * trait + 0.03 * (hours - 30) + (region == "n") * 0.5
        y = (rng.random(PEOPLE) < 1 / (1 + np.exp(-logit))).astype(int)
        order = rng.permutation(PEOPLE)
        out[month] = pd.DataFrame(
            {
                "person_id": [f"P{i:04d}" for i in order],
                "seen_at": pd.Timestamp(f"{month}-15"),
                "region": region[order],
                "income": income[order],
                "hours": hours[order],
                "churn": y[order],
            }
        )
    return out


def _labels_in_two_parts(env: Env, month: str, frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    """80 % of the month labelled, in two deliveries; the labelled rows."""
    rng = np.random.default_rng(seed)
    labelled = frame.loc[rng.random(len(frame)) < 0.8, ["person_id", "churn"]]
    half = len(labelled) // 2
    ingest_labels(env.store, env.spec, labelled.iloc[:half], month)
    second = ingest_labels(env.store, env.spec, labelled.iloc[half:], month)
    assert second.ref.version == 2  # the second part landed beside the first, no flag needed
    return labelled


def _retrain(env: Env, until: str) -> str:
    plan = retrain.plan_retrain(env, RetrainRequest(trigger="manual"), until=until)
    assert not plan.skip, plan.reason
    window = retrain.export_window(env, plan)
    exported = pd.read_parquet(window.features)
    assert exported["person_id"].duplicated().any()  # the same people in every month
    registration = retrain.register(env, plan, retrain.train(env, plan, window))
    return retrain.gate(env, registration).version


def test_a_panel_replays_with_evidence_on_the_labelled_batch_and_id_pairs(
    mlflow_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec_path = tmp_path / "panel.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    monkeypatch.setenv("COSINE_RETRAIN_DATASET_SPEC", str(spec_path))
    config = load_config(
        None,
        home=tmp_path / "home",
        mlflow={"tracking_uri": mlflow_server.url, "model_name": "panel_churn"},
        gate={"min_auc": 0.55, "min_slice_auc": 0.4, "slice_min_rows": 50, "max_auc_drop": 0.1},
        canary={"min_rows": 100, "shadow_batches": 1},
    )
    env = Env(config)
    months = _months()
    labelled: dict[str, pd.DataFrame] = {}
    for month in MONTHS[:4]:
        ingest_frame(env.store, env.spec, months[month].drop(columns=["churn"]), month)
        flow.validate(env, month)  # a retrain trains only on validated batches (the ledger)
        ingest_labels(env.store, env.spec, months[month][["person_id", "churn"]], month)
    first = _retrain(env, until="2024-02")
    assert current_alias(env.client, env.model, CHAMPION) == first
    second = _retrain(env, until="2024-04")
    assert current_alias(env.client, env.model, CANARY) == second
    evidence: dict[str, Any] = {}
    for i, month in enumerate(MONTHS[4:]):
        ingest_frame(env.store, env.spec, months[month].drop(columns=["churn"]), month)
        scored = flow.score(env, month)
        assert (scored.shadow_rows > 0) == (i == 0)  # month 5 in shadow, month 6 served
        labelled[month] = _labels_in_two_parts(env, month, months[month], seed=i)
        review_canary(env, [month])
        evidence = get_json(env.store, evidence_key(env.model, second))
        # the reference: this month's stored predictions joined with the label files
        # written above, on (batch, id) = the id within this one month
        rows = get_frame(env.store, scored.key).merge(labelled[month], on="person_id")
        assert len(rows) == len(labelled[month])  # every labelled pair, once
        y = rows["churn"].to_numpy(dtype=float)
        if i == 0:
            d = log_loss_rows(y, rows["shadow_score"].to_numpy()) - log_loss_rows(
                y, rows["score"].to_numpy()
            )
            got = evidence["shadow"][month]
            assert got["n"] == d.size
            assert got["total"] == pytest.approx(d.sum(), rel=1e-9)
        else:
            for arm, served in (
                ("canary", rows["alias"] == CANARY),
                ("champion", rows["alias"] != CANARY),
            ):
                losses = log_loss_rows(y[served], rows["score"].to_numpy()[served])
                got = evidence["canary"][month][arm]
                assert got["n"] == losses.size > 0
                assert got["total"] == pytest.approx(losses.sum(), rel=1e-9)
    assert sorted(evidence["shadow"]) == ["2024-05"]
    assert sorted(evidence["canary"]) == ["2024-06"]
