"""``data.engine: spark`` against ``pandas`` on the same batches, through the flow.

Two homes, one per engine, each with the same champion and canary (the same two
training runs, registered and gated in each home's registry of a real MLflow
server), the same reference snapshot and the same batches. Spark runs in local
mode. Each batch goes through the flow's validation, drift check and scoring with
each engine, and the stored outcomes must agree: the same suite verdict with the
same failures and texts, the same drift sample and decision (per-column scores to
1e-9), the same predictions per row (1e-9), routing and aliases. One batch is in
the canary's shadow, one is served; one is bad in five ways.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pipeline import flow
from pipeline.base.config import load_config
from pipeline.base.spark import stop_session
from pipeline.base.store import get_frame
from pipeline.flow.env import Env
from pipeline.flow.landing import reference
from pipeline.flow.monitor import drift_summary
from pipeline.flow.records import BatchVersions, Plan
from pipeline.flow.retrain import export_window
from pipeline.steps.landing.ingest import ingest_frame
from pipeline.steps.landing.labels import ingest_labels
from pipeline.steps.promotion.gate import gate_version
from pipeline.steps.quality.validation import ValidationFailed
from pipeline.steps.registry.aliases import CANARY, CHAMPION, current_alias
from pipeline.steps.registry.holdout import training_holdout
from pipeline.steps.registry.registration import register_training_run
from training.data import flights

PERMISSIVE = {"min_auc": 0.55, "min_slice_auc": 0.4, "slice_min_rows": 150, "max_auc_drop": 0.05}
ROWS = 3000
SAMPLE = 1000  # drift.sample_size: each 3,000-row batch is sampled on both engines
ENGINES = ("pandas", "spark")


def _env(root: Path, engine: str, url: str, shadow: bool = True) -> Env:
    """The engine's home; ``shadow`` false: a canary serves at once (no shadow phase)."""
    config = load_config(
        None,
        home=root / engine,
        mlflow={"tracking_uri": url, "model_name": f"engine_{engine}"},
        gate=PERMISSIVE,
        canary={"min_rows": 300, **({} if shadow else {"shadow_batches": 0})},
        drift={"sample_size": SAMPLE, "reference_rows": SAMPLE},
        data={"engine": engine, "spark": {"master": "local[2]", "driver_memory": "1g"}},
        validation={"data_docs": False},
    )
    return Env(config)


def _batch(month: int, seed: int) -> pd.DataFrame:
    features, _ = flights.load_months([month])
    return features.sample(ROWS, random_state=seed).reset_index(drop=True)


def _bad(frame: pd.DataFrame) -> pd.DataFrame:
    """Five faults the suite names: an unknown origin, a distance out of range, nulls in
    a not-null column, a duplicated id, and an extra column."""
    bad = frame.copy()
    bad.loc[:9, "origin"] = "XXX"
    bad.loc[10:19, "distance"] = -5.0
    bad.loc[20:2999, "carrier"] = None
    bad.loc[3, "flight_id"] = bad.loc[4, "flight_id"]
    return bad.assign(surplus=1.0)


@pytest.fixture(scope="module")
def engines(
    mlflow_server: Any, trained_runs: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Env]:
    root = tmp_path_factory.mktemp("engines")
    january = _batch(1, 0)
    envs = {}
    for engine in ENGINES:
        env = _env(root, engine, mlflow_server.url)
        holdout = training_holdout(env.client, trained_runs["b"].run_id, env.spec)
        for run in ("b", "a"):  # b -> champion, a -> canary
            register_training_run(
                env.client, env.store, env.spec, trained_runs[run].run_id, name=env.model
            )
            gate_version(env.client, env.store, env.config, env.spec, env.model, holdout)
        ingest_frame(env.store, env.spec, january, "2013-01")
        snap, _ = reference(env, "ref-jan", ["2013-01"])
        champion = current_alias(env.client, env.model, CHAMPION)
        assert champion is not None
        assert current_alias(env.client, env.model, CANARY)
        env.client.set_model_version_tag(
            env.model, champion, "lineage.reference_snapshot", snap.snapshot_id
        )
        envs[engine] = env
    yield envs
    stop_session()


def _through_the_flow(env: Env, batch: str) -> dict[str, Any]:
    validated = flow.validate(env, batch)
    drifted = flow.drift(env, batch, alert=False)
    scored = flow.score(env, batch)
    return {"validated": validated, "drift": drifted, "scored": scored}


def test_the_spark_engine_agrees_with_pandas_on_good_batches(engines: dict[str, Env]) -> None:
    for i, month in enumerate((4, 5)):  # April: the canary's shadow; May: it serves
        batch = f"2013-{month:02d}"
        frame = _batch(month, i + 1)
        out = {}
        for engine, env in engines.items():
            if i == 1:  # the same home, its canary past its shadow
                env = _env(env.home.parent, engine, env.config.mlflow.tracking_uri or "", False)
            ingest_frame(env.store, env.spec, frame, batch)
            out[engine] = _through_the_flow(env, batch)
        pandas_out, spark_out = out["pandas"], out["spark"]
        # validation: the same suite (fingerprint), verdict, counts and skips
        v_p, v_s = pandas_out["validated"], spark_out["validated"]
        assert v_p.success
        assert v_s.success
        assert (v_s.rows, v_s.evaluated, v_s.skipped, v_s.suite_fingerprint) == (
            ROWS, v_p.evaluated, v_p.skipped, v_p.suite_fingerprint
        )  # fmt: skip
        assert v_p.evaluated > 40  # the unseen-category checks ran (a reference was given)
        # drift: Spark drew the pandas engine's sample, so every figure is the same
        d_p, d_s = pandas_out["drift"], spark_out["drift"]
        assert d_p.checked
        assert d_s.checked
        assert d_s.sampled
        assert d_p.sampled
        assert (d_s.drifted, d_s.drifted_columns, d_s.null_shifts, d_s.skipped) == (
            d_p.drifted, d_p.drifted_columns, d_p.null_shifts, d_p.skipped
        )  # fmt: skip
        assert d_s.drift_share == pytest.approx(d_p.drift_share, abs=1e-12)
        s_p, s_s = (drift_summary(env, batch) for env in (engines["pandas"], engines["spark"]))
        assert s_p is not None
        assert s_s is not None
        assert (s_s.rows_current, s_s.compared_current) == (ROWS, SAMPLE)
        assert (s_p.rows_current, s_p.compared_current) == (ROWS, SAMPLE)
        np.testing.assert_allclose(
            [s_s.scores()[c] for c in sorted(s_p.scores())],
            [s_p.scores()[c] for c in sorted(s_p.scores())],
            rtol=0,
            atol=1e-9,
        )
        # scoring: the same rows, scores, versions and aliases
        c_p, c_s = pandas_out["scored"], spark_out["scored"]
        assert (c_s.rows, c_s.canary_rows, c_s.shadow_rows, c_s.rolled_back) == (
            c_p.rows, c_p.canary_rows, c_p.shadow_rows, c_p.rolled_back
        )  # fmt: skip
        assert (c_p.shadow_rows > 0) == (i == 0)
        assert (c_p.canary_rows > 0) == (i == 1)
        p = get_frame(engines["pandas"].store, c_p.key).set_index("flight_id")
        s = get_frame(engines["spark"].store, c_s.key).set_index("flight_id").loc[p.index]
        assert len(p) == ROWS
        assert p.index.is_unique
        np.testing.assert_allclose(s["score"], p["score"], rtol=0, atol=1e-9)
        assert (s["alias"] == p["alias"]).all()
        assert (s["model_version"] == p["model_version"]).all()
        if i == 0:
            np.testing.assert_allclose(s["shadow_score"], p["shadow_score"], rtol=0, atol=1e-9)


def test_the_spark_engine_refuses_a_bad_batch_with_the_same_failures(
    engines: dict[str, Env],
) -> None:
    frame = _bad(_batch(6, 7))
    failures = {}
    for engine, env in engines.items():
        ingest_frame(env.store, env.spec, frame, "2013-06")
        with pytest.raises(ValidationFailed) as caught:
            flow.validate(env, "2013-06", alert=False)
        failures[engine] = caught.value.summary
    p, s = failures["pandas"], failures["spark"]
    assert s.rows == p.rows == ROWS
    lines = {engine: [f.line() for f in summary.failed] for engine, summary in failures.items()}
    assert lines["spark"] == lines["pandas"], lines
    kinds = {(f.expectation, f.column) for f in p.failed}
    assert kinds == {
        ("expect_table_columns_to_match_set", None),
        ("expect_column_values_to_be_in_set", "origin"),
        ("expect_column_values_to_be_between", "distance"),
        ("expect_column_values_to_not_be_null", "carrier"),
        ("expect_column_values_to_be_unique", "flight_id"),
    }, kinds


def test_the_spark_engine_writes_the_window_the_pandas_engine_writes(
    engines: dict[str, Env],
) -> None:
    """January's labels in two deliveries (the first covers 2,000 rows, the second the
    rest and corrects 100 of the first), 200 rows never labelled: both engines' window
    files hold the same rows, columns and values (the second delivery winning)."""
    features = _batch(1, 0)
    _, labels = flights.load_months([1])
    labels = labels[labels["flight_id"].isin(features["flight_id"])].reset_index(drop=True)
    first, rest = labels.iloc[:2000], labels.iloc[2000:2800]
    corrected = first.iloc[:100].assign(late=1 - first["late"].iloc[:100])
    plan = Plan(
        trigger="manual", reasons=["test"], window=["2013-01"], skip=False, reason="",
        versions={"2013-01": BatchVersions(features=1, labels=2)}, run_name="retrain-engines",
    )  # fmt: skip
    frames = {}
    for engine, env in engines.items():
        ingest_labels(env.store, env.spec, first, "2013-01")
        ingest_labels(env.store, env.spec, pd.concat([rest, corrected]), "2013-01",
                      new_version=True)  # fmt: skip
        window = export_window(env, plan)
        files = sorted(Path(window.features).glob("*.parquet"))
        assert len(files) == 1
        assert window.rows == 2800
        frame = pd.read_parquet(files[0])
        frame["sched_dep"] = pd.to_datetime(frame["sched_dep"]).dt.tz_localize(None)
        frames[engine] = frame.sort_values("flight_id").reset_index(drop=True)
    pandas_frame, spark_frame = frames["pandas"], frames["spark"]
    assert list(spark_frame.columns) == list(pandas_frame.columns)
    pd.testing.assert_frame_equal(spark_frame, pandas_frame, check_dtype=False)
    late = pandas_frame.set_index("flight_id")["late"]
    assert (late[corrected["flight_id"]] == corrected.set_index("flight_id")["late"]).all()
