"""Drift (Evidently) against independent references, sampling, live quality, the decision."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pipeline.base.layout import BatchRef, predictions_key
from pipeline.base.sections import DriftConfig, QualityConfig
from pipeline.base.store import LocalStore, put_frame
from pipeline.steps.landing.ingest import ingest_frame
from pipeline.steps.landing.labels import ingest_labels
from pipeline.steps.quality.decision import decide_retrain
from pipeline.steps.quality.drift import ColumnDrift, DriftSummary, check_drift, compute_drift
from pipeline.steps.quality.live import QualitySummary, check_quality, live_quality
from pipeline.steps.quality.reference import create_reference, sample_rows
from training.data.spec import DataError, categories_as_str

REF = BatchRef("flights", "2013-07", 1)


@pytest.fixture(scope="module")
def jan_jul(flights_year):
    jan = flights_year[1][0].iloc[::5].reset_index(drop=True)  # 5,401 rows
    jul = flights_year[7][0].iloc[::5].reset_index(drop=True)  # 5,885 rows
    return jan, jul


@pytest.fixture(scope="module")
def jul_vs_jan(spec, jan_jul):
    jan, jul = jan_jul
    config = DriftConfig(column_methods={"distance": "ks"}, column_thresholds={"distance": 0.05})
    return compute_drift(jul, jan, spec, config, ref=REF, reference_id="2013-01")


def _js_distance(ref: pd.Series, cur: pd.Series) -> float:
    """Jensen-Shannon distance (natural log) of two category frequency vectors, by hand."""
    keys = sorted(set(ref.dropna()) | set(cur.dropna()))
    p = ref.value_counts().reindex(keys, fill_value=0).to_numpy() / len(ref)
    q = cur.value_counts().reindex(keys, fill_value=0).to_numpy() / len(cur)
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log(a[mask] / b[mask])))

    return float(np.sqrt((kl(p, m) + kl(q, m)) / 2))


def _assert_scores(
    summary: DriftSummary,
    columns: tuple[str, ...],
    method: str,
    threshold: float,
    expected_of: Callable[[str], float],
) -> None:
    """Each column scored by ``method`` against ``threshold``, its score the reference's."""
    for column in columns:
        expected = expected_of(column)
        got = summary.column(column)
        assert got.method == method
        assert got.threshold == threshold
        assert got.score == pytest.approx(expected, rel=1e-9)
        assert got.drifted == (expected >= got.threshold)


def test_numeric_score_is_the_normed_wasserstein_distance(jul_vs_jan, jan_jul) -> None:
    jan, jul = jan_jul

    def normed_wasserstein(column: str) -> float:
        ref, cur = jan[column].dropna(), jul[column].dropna()
        return stats.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001)

    columns = ("temp", "pressure", "sched_block_min")
    num_threshold = DriftConfig().num_threshold
    _assert_scores(jul_vs_jan, columns, "wasserstein", num_threshold, normed_wasserstein)


def test_categorical_score_is_the_jensen_shannon_distance(jul_vs_jan, jan_jul) -> None:
    jan, jul = jan_jul

    def js_distance(column: str) -> float:
        return _js_distance(categories_as_str(jan[column]), categories_as_str(jul[column]))

    columns = ("carrier", "dest", "dep_hour")
    cat_threshold = DriftConfig().cat_threshold
    _assert_scores(jul_vs_jan, columns, "jensenshannon", cat_threshold, js_distance)


def test_per_column_method_ks_is_scipys_p_value(jul_vs_jan, jan_jul) -> None:
    jan, jul = jan_jul
    got = jul_vs_jan.column("distance")
    expected = stats.ks_2samp(jan["distance"], jul["distance"]).pvalue
    assert got.method == "ks"
    assert got.score_kind == "p_value"
    assert got.score == pytest.approx(expected, rel=1e-9, abs=1e-300)
    assert got.threshold == 0.05  # from drift.column_thresholds
    assert got.drifted == (expected < 0.05)  # a p-value drifts *below* its threshold


def test_share_and_verdict(jul_vs_jan, spec) -> None:
    s = jul_vs_jan
    assert {c.column for c in s.columns} == set(spec.feature_columns)
    assert s.drifted_columns == tuple(c.column for c in s.columns if c.drifted)
    assert s.drift_share == pytest.approx(len(s.drifted_columns) / len(s.columns))
    assert s.drifted == (s.drift_share >= s.share_threshold)
    assert {"temp", "dewp"} <= set(s.drifted_columns)  # July is not January
    assert "origin" not in s.drifted_columns  # the airports' shares barely move
    assert not s.sampled
    assert (s.compared_current, s.rows_current) == (5885, 5885)


def test_same_data_does_not_drift(spec, jan_jul) -> None:
    jan = jan_jul[0].head(2000)
    s = compute_drift(jan, jan, spec, ref=REF, reference_id="self")
    assert s.drift_share == 0
    assert not s.drifted
    assert all(c.score == pytest.approx(0, abs=1e-12) for c in s.columns)
    assert decide_retrain(s).retrain is False


def test_unknown_drift_columns_are_named(spec, jan_jul) -> None:
    with pytest.raises(DataError, match=r"drift\.columns \['flight_id'\] are not feature columns"):
        compute_drift(
            jan_jul[1],
            jan_jul[0],
            spec,
            DriftConfig(columns=["flight_id"]),
            ref=REF,
            reference_id="r",
        )


# ------------------------------------------------------------------------------ sampling


def test_sample_rows_is_deterministic_and_order_free(march) -> None:
    a, sampled = sample_rows(march, 1000, "flight_id", seed=0)
    assert sampled
    assert len(a) == 1000
    shuffled = march.sample(frac=1.0, random_state=1)
    b, _ = sample_rows(shuffled, 1000, "flight_id", seed=0)
    assert set(a["flight_id"]) == set(b["flight_id"])  # the same rows whatever the order
    assert a["flight_id"].tolist() == [x for x in march["flight_id"] if x in set(a["flight_id"])]
    c, _ = sample_rows(march, 1000, "flight_id", seed=1)
    assert set(c["flight_id"]) != set(a["flight_id"])  # the seed changes the sample
    same, sampled = sample_rows(march, 5000, "flight_id")
    assert same is march
    assert not sampled


def test_check_drift_stores_report_and_says_it_sampled(tmp_path, spec, jan_jul) -> None:
    jan, jul = jan_jul
    store = LocalStore(tmp_path / "store")
    create_reference(store, spec, jan.head(2000), "2013-01")
    ref = ingest_frame(store, spec, jul.head(2500), "2013-07").ref
    config = DriftConfig(sample_size=1000)
    summary = check_drift(store, spec, ref, "2013-01", config=config)
    assert summary.sampled
    assert (summary.compared_current, summary.rows_current) == (1000, 2500)
    assert (summary.compared_reference, summary.rows_reference) == (1000, 2000)
    assert "sampled 1,000 of 2,500 rows" in summary.message()
    prefix = f"reports/flights/2013-07/v1/drift/2013-01-{summary.settings_fingerprint}"
    html = store.get_bytes(f"{prefix}/report.html").decode()
    assert "SAMPLED: the batch has 2,500 rows" in html
    assert store.exists(f"{prefix}/summary.json")
    again = check_drift(store, spec, ref, "2013-01", config=config)
    assert again.reused
    assert again.scores() == summary.scores()


# ------------------------------------------------------------------------------ live quality


def _auc_by_ranks(y: np.ndarray, score: np.ndarray) -> float:
    """AUC as the Mann-Whitney U statistic over n_pos * n_neg (an independent formula)."""
    u = stats.mannwhitneyu(score[y == 1], score[y == 0]).statistic
    return float(u / ((y == 1).sum() * (y == 0).sum()))


def _predictions(labels: pd.DataFrame, noise: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    score = labels["late"].to_numpy() + rng.normal(0, noise, len(labels))
    return pd.DataFrame({"flight_id": labels["flight_id"], "score": score})


def test_live_quality_is_the_auc(spec, flights_year) -> None:
    labels = flights_year[3][1].head(3000)
    preds = _predictions(labels, noise=1.5)
    q = live_quality(preds, labels, spec, QualityConfig(slo=0.65), batch_id="b", model_version="3")
    expected = _auc_by_ranks(labels["late"].to_numpy(), preds["score"].to_numpy())
    assert q.value == pytest.approx(expected, abs=1e-6)
    assert q.rows == 3000
    assert q.enough_rows
    assert q.below_slo == (expected < 0.65)


def test_live_quality_verdicts(spec, flights_year) -> None:
    labels = flights_year[3][1].head(3000)
    weak = live_quality(
        _predictions(labels, noise=5.0), labels, spec, batch_id="b", model_version="3"
    )
    assert weak.below_slo  # nearly random scores
    few = live_quality(
        _predictions(labels.head(100), noise=5.0),
        labels.head(100),
        spec,
        QualityConfig(min_rows=500),
        batch_id="b",
        model_version="3",
    )
    assert not few.below_slo
    assert "no verdict" in few.note
    one_class = labels[labels["late"] == 0].head(800)
    undefined = live_quality(
        _predictions(one_class, 1.0), one_class, spec, batch_id="b", model_version="3"
    )
    assert undefined.value is None
    assert "one class" in undefined.note


def test_check_quality_reads_predictions_and_labels(tmp_path, spec, flights_year) -> None:
    features, labels = flights_year[3]
    store = LocalStore(tmp_path / "store")
    ingest_frame(store, spec, features.head(2000), "b1")
    with pytest.raises(DataError, match="no labels for flights/b1 yet"):
        check_quality(store, spec, "b1", "7")
    ingest_labels(store, spec, labels.head(2000), "b1")
    with pytest.raises(DataError, match="no predictions of model 7"):
        check_quality(store, spec, "b1", "7")
    put_frame(store, predictions_key("flights", "b1", "7"), _predictions(labels.head(2000), 0.1))
    q = check_quality(store, spec, "b1", "7")
    assert q.value > 0.95
    assert not q.below_slo


# ------------------------------------------------------------------------------ the decision


def _drift(share: float, threshold: float = 0.3) -> DriftSummary:
    n = 10
    k = round(share * n)
    cols = tuple(
        ColumnDrift(f"c{i}", "numeric", "wasserstein", 0.5 if i < k else 0.01, 0.1, i < k)
        for i in range(n)
    )
    return DriftSummary(
        ref=REF,
        reference_id="2013-01",
        rows_current=100,
        rows_reference=100,
        compared_current=100,
        compared_reference=100,
        sampled=False,
        drift_share=k / n,
        share_threshold=threshold,
        drifted=k / n >= threshold,
        drifted_columns=tuple(c.column for c in cols if c.drifted),
        columns=cols,
    )


def _quality(value: float | None, slo: float = 0.65, rows: int = 1000) -> QualitySummary:
    enough = rows >= 500 and value is not None
    return QualitySummary(
        "flights",
        "2013-07",
        "3",
        "auc",
        value,
        slo,
        rows,
        enough,
        bool(enough and value is not None and value < slo),
        "" if enough else "too few rows",
    )


def test_decision_on_drift_carries_its_reason() -> None:
    yes = decide_retrain(_drift(0.3))
    assert yes.retrain
    assert yes.triggers == ("drift",)
    assert "3 of 10 columns drifted (30% >= 30%)" in yes.reason
    assert "c0, c1, c2" in yes.reason
    no = decide_retrain(_drift(0.2))
    assert not no.retrain
    assert no.reason == "no retrain: drift share 20% < 30% against 2013-01"


def test_decision_on_quality_and_both() -> None:
    low = decide_retrain(quality=_quality(0.61))
    assert low.retrain
    assert low.triggers == ("quality",)
    assert "auc 0.610 of model 3 on 1,000 labelled rows is below the SLO 0.65" in low.reason
    both = decide_retrain(_drift(0.5), _quality(0.6))
    assert both.triggers == ("drift", "quality")
    fine = decide_retrain(_drift(0.1), _quality(0.7))
    assert not fine.retrain
    assert "live auc 0.700 >= SLO 0.65" in fine.reason
    unsure = decide_retrain(quality=_quality(0.5, rows=10))
    assert not unsure.retrain
    assert "no verdict" in unsure.reason
    assert not decide_retrain().retrain
