"""Null shares in the drift check, on a dataset that is not flights (tests/pipeline/loans.py).

A column that goes from empty to filled is a drift finding that requests a retrain; a
column that cannot be compared by value is reported with its reason; validation still
refuses nulls beyond the spec's own ``max_null_share``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.base.layout import BatchRef
from pipeline.base.sections import DriftConfig
from pipeline.base.store import LocalStore
from pipeline.steps.landing.ingest import ingest_frame
from pipeline.steps.quality.decision import decide_retrain
from pipeline.steps.quality.drift import DriftSummary, check_drift, compute_drift
from pipeline.steps.quality.reference import create_reference
from pipeline.steps.quality.validation import validate_frame
from tests.pipeline import loans
from tests.pipeline.cli_support import clear_pipeline_env
from training.data.spec import DataError

REF = BatchRef("loans", "2024-07", 1)


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory):
    return loans.spec(tmp_path_factory.mktemp("spec"))


@pytest.fixture(scope="module")
def frames():
    """January: region empty (100 % null); July: region 80 % filled (20 % null)."""
    jan = loans.batch("2024-01", 800, seed=1, region_nulls=1.0)
    jul = loans.batch("2024-07", 800, seed=2, region_nulls=0.2)
    return jan, jul


def test_empty_column_filling_up_is_a_finding_that_requests_a_retrain(spec, frames) -> None:
    jan, jul = frames
    before, after = jan["region"].isna().mean(), jul["region"].isna().mean()
    assert (before, after) == (1.0, 0.2)  # the fixture itself, counted by pandas
    summary = compute_drift(jul, jan, spec, DriftConfig(), ref=REF, reference_id="2024-01")
    assert [n.column for n in summary.null_shifts] == ["region"]
    shift = summary.null_shifts[0]
    assert (shift.reference_share, shift.current_share) == (before, after)
    assert shift.threshold == DriftConfig().null_share_threshold == 0.25
    # the values of the other columns come from the same generator: none drifted by value
    assert [c.column for c in summary.columns if c.drifted] == []
    assert summary.drift_share == 0.0
    assert summary.drifted
    assert summary.drifted_columns == ("region",)
    # the column Evidently cannot compare (no values in the reference) is named, with why
    assert summary.skipped == (
        "region: no values in the reference (null share 100% -> 20%); "
        "compared by its null share only",
    )
    assert "region" not in [c.column for c in summary.columns]
    text = summary.message()
    assert "NULLS region: null share 100% in the reference -> 20% in the batch" in text
    assert "(skipped: region: no values in the reference" in text
    decision = decide_retrain(summary)
    assert decision.retrain
    assert decision.triggers == ("drift",)
    assert "null share moved by more than 25%" in decision.reason
    assert "region 100% -> 20%" in decision.reason


def test_the_threshold_is_a_strict_absolute_move(spec) -> None:
    jan = loans.batch("2024-01", 800, seed=1, income_nulls=0.05)
    feb = loans.batch("2024-02", 800, seed=2, income_nulls=0.30)  # moved by exactly 0.25
    calm = compute_drift(feb, jan, spec, DriftConfig(), ref=REF, reference_id="2024-01")
    assert calm.null_shifts == ()
    assert not calm.drifted
    assert "income" in [c.column for c in calm.columns]  # compared by value as usual
    # the reverse move counts too, and a lower threshold catches the same move
    back = compute_drift(
        jan, feb, spec, DriftConfig(null_share_threshold=0.2), ref=REF, reference_id="2024-02"
    )
    assert [(n.column, n.reference_share, n.current_share) for n in back.null_shifts] == [
        ("income", 0.30, 0.05)
    ]
    assert back.drifted
    assert "income" in [c.column for c in back.columns]
    off = compute_drift(
        jan, feb, spec, DriftConfig(null_share_threshold=1.0), ref=REF, reference_id="2024-02"
    )
    assert off.null_shifts == ()
    assert not off.drifted


def test_threshold_is_validated_with_its_name() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="null_share_threshold"):
        DriftConfig(null_share_threshold=0)


def test_stored_summary_and_html_report_name_the_finding(tmp_path: Path, spec, frames) -> None:
    jan, jul = frames
    store = LocalStore(tmp_path / "store")
    create_reference(store, spec, jan, "2024-01")
    ref = ingest_frame(store, spec, jul, "2024-07").ref
    summary = check_drift(store, spec, ref, "2024-01")
    again = check_drift(store, spec, ref, "2024-01")
    assert again.reused
    assert again.null_shifts == summary.null_shifts
    assert DriftSummary.from_dict(summary.as_dict()) == summary
    html = Path(summary.report_uri.removeprefix("file://")).read_text(encoding="utf-8")
    assert "Null share moved: region: null share 100% in the reference -&gt; 20%" in html
    assert "Not in the value comparison: region: no values in the reference" in html
    # a different threshold is a different check, stored beside the first
    other = check_drift(store, spec, ref, "2024-01", config=DriftConfig(null_share_threshold=0.9))
    assert not other.reused
    assert other.null_shifts == ()
    assert not other.drifted


def test_a_column_empty_on_both_sides_is_reported_not_dropped(spec) -> None:
    jan = loans.batch("2024-01", 400, seed=1, region_nulls=1.0)
    feb = loans.batch("2024-02", 400, seed=2, region_nulls=1.0)
    summary = compute_drift(feb, jan, spec, DriftConfig(), ref=REF, reference_id="2024-01")
    assert summary.null_shifts == ()
    assert not summary.drifted
    assert summary.skipped == (
        "region: no values in the reference and the batch (null share 100% -> 100%); "
        "compared by its null share only",
    )


def test_validation_allows_nulls_up_to_the_spec_and_refuses_beyond(tmp_path: Path) -> None:
    """The finding is drift, not a refusal: the batch is valid while the spec's own
    max_null_share holds (region: 1.0, income: 0.5), and refused beyond it."""
    spec = loans.spec(tmp_path)
    ok = validate_frame(loans.batch("2024-07", 600, seed=3, region_nulls=0.2), spec, ref=REF)
    assert ok.success, ok.message()
    bad = validate_frame(loans.batch("2024-07", 600, seed=3, income_nulls=0.6), spec, ref=REF)
    assert not bad.success
    assert [f.column for f in bad.failed] == ["income"]
    assert "not_be_null" in bad.failed[0].expectation


def test_the_console_names_the_finding_and_the_skipped_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """python -m pipeline reference/ingest/drift on the loans spec: what a user reads."""
    from pipeline.apps.cli import main

    clear_pipeline_env(monkeypatch)
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COSINE_RETRAIN_DATASET_SPEC", str(loans.write_spec(tmp_path / "l.yaml")))
    for month, nulls in (("2024-01", 1.0), ("2024-07", 0.2)):
        path = tmp_path / f"{month}.csv"
        loans.batch(month, 800, seed=int(month[-2:]), region_nulls=nulls).to_csv(path, index=False)
        assert main(["ingest", str(path), "--batch-id", month]) == 0
    assert main(["reference", "jan", "--batches", "2024-01"]) == 0
    capsys.readouterr()
    assert main(["drift", "2024-07", "--reference", "jan"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "batch loans/2024-07/v1 drifted against reference jan: 0 of 3 columns (0%; threshold "
        "35%); the null share moved in 1\n"
    )
    assert "  NULLS region: null share 100% in the reference -> 20% in the batch" in out
    assert "  (skipped: region: no values in the reference (null share 100% -> 20%)" in out
    assert out.rstrip().endswith(
        "decision: RETRAIN (drift: the null share moved by more than 25% against reference "
        "jan in region 100% -> 20%)"
    )


def test_only_a_null_shift_to_compare_still_gives_a_summary(tmp_path: Path, spec, frames) -> None:
    """drift.columns = [region]: nothing to compare by value, the null share is enough."""
    jan, jul = frames
    html = tmp_path / "report.html"
    config = DriftConfig(columns=["region"])
    summary = compute_drift(jul, jan, spec, config, ref=REF, reference_id="2024-01", html_path=html)
    assert summary.columns == ()
    assert summary.drifted
    assert summary.drifted_columns == ("region",)
    assert "Null share moved: region" in html.read_text(encoding="utf-8")
    calm = loans.batch("2024-08", 800, seed=3, region_nulls=1.0)
    with pytest.raises(DataError, match="no column has values to compare"):
        compute_drift(calm, jan, spec, config, ref=REF, reference_id="2024-01")
