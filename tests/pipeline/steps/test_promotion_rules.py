"""The gate's floors and the canary's rules per data set, and following the batch sizes.

Issue 16: with 3,000-row monthly batches, 1,000 labelled rows per arm at a 20 %
share kept the canary inconclusive for four months. The data set here is made
in the test (customer churn: string ids, its own target), nothing of flights.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline.base.config import load_config
from pipeline.base.store import LocalStore, put_frame
from pipeline.base.tracking import build_client
from pipeline.steps.canary.review import review_canary
from pipeline.steps.canary.routing import route_to_canary
from pipeline.steps.promotion.rules import (
    MIN_ROWS_FLOOR,
    auc_noise,
    canary_rules,
    derived_min_rows,
    gate_rules,
)
from pipeline.steps.registry.aliases import CANARY, CHAMPION, move_alias
from tests import spec_support
from training.data.spec import DatasetSpec


def churn_spec(**promotion: Any) -> DatasetSpec:
    return spec_support.churn_spec(
        model_name="churn_model",
        features={"plan": "categorical", "tenure_months": "numeric"},
        promotion=promotion,
    )


@pytest.mark.parametrize(
    ("share", "rows", "expected"),
    [
        (0.2, [3000, 2900, 3100], 300),  # half of the 600 rows a month the canary serves
        (0.2, [27_000, 26_500, 28_000], 1000),  # flights' months: the config's 1,000 is the cap
        (0.2, [400], MIN_ROWS_FLOOR),  # tiny batches: never below the floor
        (0.5, [3000], 750),
        (0.2, [], 1000),  # nothing seen yet: the config's value
    ],
)
def test_the_canarys_minimum_rows_follow_the_batch_size(
    share: float, rows: list[int], expected: int
) -> None:
    assert derived_min_rows(share, rows, cap=1000) == expected
    config = load_config(None, canary={"share": share})
    assert canary_rules(config, churn_spec(), rows).min_rows == expected


def test_config_then_spec_then_default() -> None:
    plain = load_config(None)
    spec = churn_spec(canary_share=0.3, canary_min_rows=250, min_auc=0.58, max_auc_drop=0.03)
    rules = canary_rules(plain, spec, [3000])
    assert (rules.share, rules.min_rows) == (0.3, 250)
    gate = gate_rules(plain, spec)
    assert (gate.min_auc, gate.min_slice_auc, gate.max_auc_drop) == (0.58, 0.60, 0.03)
    # the pipeline's config set explicitly wins over the spec
    explicit = load_config(None, canary={"min_rows": 700, "share": 0.1}, gate={"min_auc": 0.7})
    rules = canary_rules(explicit, spec, [3000])
    assert (rules.share, rules.min_rows) == (0.1, 700)
    gate = gate_rules(explicit, spec)
    assert (gate.min_auc, gate.max_auc_drop) == (0.7, 0.03)
    # no promotion section: the config's defaults, the minimum rows from the batch size
    assert gate_rules(plain, churn_spec()) == plain.gate
    assert canary_rules(plain, churn_spec(), [3000]).min_rows == 300


def test_the_auc_noise_matches_a_simulation() -> None:
    """Hanley & McNeil's standard error against the spread of AUCs measured on many
    simulated holdouts (binormal scores with a true AUC of 0.7): an independent check."""
    from scipy.stats import norm
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    shift = np.sqrt(2) * norm.ppf(0.7)  # binormal: AUC = Phi(shift / sqrt(2))
    for positives, negatives in ((126, 1674), (400, 1600)):
        y = np.r_[np.ones(positives), np.zeros(negatives)]
        aucs = [
            roc_auc_score(y, np.r_[rng.normal(shift, 1, positives), rng.normal(0, 1, negatives)])
            for _ in range(400)
        ]
        assert auc_noise(positives, negatives) == pytest.approx(np.std(aucs), rel=0.15)


def test_the_allowed_auc_drop_follows_the_holdout_size() -> None:
    plain = load_config(None)
    small = np.r_[np.ones(126), np.zeros(1674)]  # 1,800 rows, 7 % positives
    large = np.r_[np.ones(3200), np.zeros(12800)]  # a flights-sized holdout
    assert gate_rules(plain, churn_spec(), small).max_auc_drop == pytest.approx(0.0268, abs=1e-4)
    assert gate_rules(plain, churn_spec(), large).max_auc_drop == 0.01  # the config's default
    # the spec or the config set it: no allowance is added
    assert gate_rules(plain, churn_spec(max_auc_drop=0.005), small).max_auc_drop == 0.005
    explicit = load_config(None, gate={"max_auc_drop": 0.01})
    assert gate_rules(explicit, churn_spec(), small).max_auc_drop == 0.01


def test_an_environment_variable_is_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSINE_RETRAIN_CANARY__MIN_ROWS", "1000")
    monkeypatch.setenv("COSINE_RETRAIN_GATE__MIN_AUC", "0.66")
    config = load_config(None)
    spec = churn_spec(canary_min_rows=250, min_auc=0.58)
    assert canary_rules(config, spec, [3000]).min_rows == 1000
    assert gate_rules(config, spec).min_auc == 0.66


def test_a_bad_promotion_value_names_the_field(tmp_path: Path) -> None:
    import yaml

    from training.data.spec import DataError, load_spec

    raw = churn_spec().model_dump(mode="json")
    raw["promotion"] = {"canary_share": 1.5}
    path = tmp_path / "churn.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match=r"promotion\.canary_share: Input should be less than 1"):
        load_spec(path)


# ------------------------------------------------------------------ a real review


def _serving(store: LocalStore, batch: str, rows: int, seed: int) -> pd.DataFrame:
    """One 3,000-row month as scoring wrote it (champion v1, canary v2 at a 20 % share),
    the canary somewhat sharper than the champion; returns its labels."""
    rng = np.random.default_rng(seed)
    ids = [f"{batch}-c{i:05d}" for i in range(rows)]
    y = rng.integers(0, 2, rows)
    to_canary = route_to_canary(ids, 0.2, "canary-v1")
    sharp = np.where(to_canary, 0.75, 0.7)
    p = np.clip(np.where(y == 1, sharp, 1 - sharp) + rng.normal(0, 0.05, rows), 0.01, 0.99)
    served = pd.DataFrame(
        {
            "customer_id": ids,
            "score": p,
            "model_version": np.where(to_canary, "2", "1"),
            "alias": np.where(to_canary, CANARY, CHAMPION),
        }
    )
    key = f"predictions/churn/{batch}/champion-v1_canary-v2/predictions.parquet"
    put_frame(store, key, served)
    return pd.DataFrame({"customer_id": ids, "churned": y, "batch_id": batch})


def test_a_3000_row_month_concludes_the_canary(mlflow_server: Any, tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    spec = churn_spec()
    store = LocalStore(tmp_path / "store")
    name = "churn_rules_model"

    def review(**canary: Any) -> Any:
        config = load_config(
            None,
            home=tmp_path,
            mlflow={"tracking_uri": mlflow_server.url, "model_name": name},
            canary=canary,
        )
        client = build_client(config)
        with contextlib.suppress(MlflowException):
            client.create_registered_model(name)
        while len(client.search_model_versions(f"name='{name}'")) < 2:
            client.create_model_version(name, "s3://nowhere/m", tags={"gate.status": "passed"})
        move_alias(client, store, name, CHAMPION, "1", why="test setup")
        move_alias(client, store, name, CANARY, "2", why="test setup")
        return review_canary(client, store, config, spec, name, labels)

    labels = _serving(store, "2024-01", 3000, seed=1)
    derived = review()
    assert 550 < derived.canary.rows < 650  # a fifth of the month
    assert derived.outcome == "success", derived.describe()
    # the flights-sized rule that kept it waiting: 1,000 per arm
    fixed = review(min_rows=1000)
    assert fixed.outcome == "inconclusive"
    assert f"too few labelled rows (canary {derived.canary.rows}," in fixed.reason
    assert "each needs 1000" in fixed.reason
