"""Validation: the GX suite built from the spec, the bad-input catalogue, quarantine, Data Docs."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from pipeline.base.layout import BatchNotFound, BatchRef, committed_versions, resolve_batch
from pipeline.base.store import LocalStore
from pipeline.steps.landing.ingest import ingest_frame
from pipeline.steps.quality.reference import create_reference
from pipeline.steps.quality.suite import SuiteError, build_suite, prepare_frame
from pipeline.steps.quality.validation import ValidationFailed, validate_batch, validate_frame
from training.data.spec import Expectation

# ------------------------------------------------------------------------------ the suite (no GX)


def test_suite_follows_the_spec(spec) -> None:
    checks, skipped = build_suite(spec)
    by = {(c.type, c.kwargs.get("column")): c.kwargs for c in checks}
    assert by[("expect_table_columns_to_match_set", None)] == {
        "column_set": spec.column_names,
        "exact_match": True,
    }
    assert by[("expect_table_row_count_to_be_between", None)] == {
        "min_value": 1000,
        "max_value": 200_000,
    }
    assert by[("expect_column_values_to_be_between", "distance")] == {
        "column": "distance",
        "min_value": 1,
        "max_value": 6000,
    }
    assert by[("expect_column_values_to_be_between", "wind_speed")]["mostly"] == 0.999
    assert by[("expect_column_values_to_be_in_set", "origin")]["value_set"] == ["EWR", "JFK", "LGA"]
    assert by[("expect_column_values_to_be_in_set", "dep_hour")]["value_set"] == [
        str(h) for h in range(24)
    ]
    assert by[("expect_column_values_to_not_be_null", "temp")]["mostly"] == pytest.approx(0.95)
    assert ("expect_column_values_to_not_be_null", "wind_gust") not in by  # max_null_share 1
    assert ("expect_column_values_to_be_unique", "flight_id") in by
    assert by[("expect_column_mean_to_be_between", "distance")] == {
        "column": "distance",
        "min_value": 300,
        "max_value": 3000,
    }
    # unseen-category checks need a reference: skipped, and said so
    assert ("expect_column_values_to_be_in_set", "carrier") not in by
    assert skipped == [
        "carrier: max_unseen_share needs a reference snapshot",
        "dest: max_unseen_share needs a reference snapshot",
    ]
    with_ref, skipped = build_suite(spec, {"carrier": ["AA", "UA"], "dest": ["BOS"]}, "r1")
    unseen = [c for c in with_ref if c.kwargs.get("column") == "carrier" and "mostly" in c.kwargs]
    assert unseen[0].kwargs == {"column": "carrier", "value_set": ["AA", "UA"], "mostly": 0.98}
    assert skipped == []


def test_prepare_frame_makes_categories_text(spec, march) -> None:
    prepared = prepare_frame(march, spec)
    assert prepared["dep_hour"].iloc[0] == str(march["dep_hour"].iloc[0])
    assert prepared["day_of_week"].map(type).eq(str).all()
    frac = prepare_frame(march.assign(dep_hour=march["dep_hour"] + 0.5), spec)
    assert frac["dep_hour"].dtype == np.float64  # left alone: the type check names it
    nullable = prepare_frame(march.assign(distance=march["distance"].astype("Int64")), spec)
    assert nullable["distance"].dtype == np.float64


# ------------------------------------------------------------------------------ good batches


@pytest.fixture(scope="module")
def validated(tmp_path_factory, spec, march, flights_year):
    """A store with reference 2013-01 and a March batch validated once (GX runs once)."""
    store = LocalStore(tmp_path_factory.mktemp("validated") / "store")
    create_reference(store, spec, flights_year[1][0], "2013-01")
    ref = ingest_frame(store, spec, march, "2013-03").ref
    summary = validate_batch(store, spec, ref, reference_id="2013-01")
    return store, ref, summary


def test_good_batch_passes_with_evidence(validated) -> None:
    store, _, summary = validated
    assert summary.success
    assert summary.failed == ()
    assert summary.skipped == ()  # the reference enables the unseen-category checks
    assert summary.evaluated == 55
    assert summary.rows == 3000
    prefix = f"reports/flights/2013-03/v1/validation/{summary.suite_fingerprint}"
    assert store.exists(f"{prefix}/summary.json")
    assert store.exists(f"{prefix}/result.json")
    index = store.get_bytes(f"{prefix}/data_docs/index.html").decode()
    assert "2013-03-v1" in index
    pages = [k for k in store.list(f"{prefix}/data_docs/validations") if k.endswith(".html")]
    assert len(pages) == 1
    page = store.get_bytes(pages[0]).decode()
    assert "values must be greater than or equal to" in page  # the rendered range checks
    assert not [k for k in store.list(prefix) if k.endswith(".gif")]
    assert committed_versions(store, "flights", "2013-03") == [1]


def test_validating_again_reuses_the_stored_result(validated, spec) -> None:
    store, ref, summary = validated
    again = validate_batch(store, spec, ref, reference_id="2013-01")
    assert again.reused
    assert again.suite_fingerprint == summary.suite_fingerprint
    assert again.success


# ------------------------------------------------------------------------------ bad inputs


def _mutations():
    def missing_column(df):
        return df.drop(columns=["temp"])

    def extra_column(df):
        return df.assign(gate="A1")

    def wrong_dtype(df):
        out = df.assign(distance=df["distance"].astype(str))
        out.loc[[3, 30], "distance"] = ["far", "n/a"]
        return out

    def all_null(df):
        return df.assign(humid=np.nan)

    def out_of_range(df):
        out = df.copy()
        out.loc[[1, 2, 3], "distance"] = [-5.0, 0.0, 99_999.0]
        return out

    def bad_hour(df):
        out = df.copy()
        out.loc[[4, 5], "dep_hour"] = [24, 25]
        return out

    def unknown_categories(df):
        out = df.copy()
        out.loc[: len(df) // 10, "dest"] = "XNA-NEW"  # 10% unseen > 5% allowed
        return out

    def duplicate_ids(df):
        out = df.copy()
        out.loc[[10, 11, 12], "flight_id"] = df.loc[0, "flight_id"]
        return out

    def too_few_rows(df):
        return df.head(200)

    def fractional_category(df):
        return df.assign(day_of_week=df["day_of_week"] + 0.5)

    def unparseable_timestamp(df):
        out = df.assign(sched_dep=df["sched_dep"].astype(str))
        out.loc[7, "sched_dep"] = "yesterday"
        return out

    return {
        "missing column": (missing_column, r"table: missing column\(s\) \['temp'\]", None),
        "extra column": (extra_column, r"unexpected column\(s\) \['gate'\]", None),
        "wrong dtype": (wrong_dtype, r"distance: 2 of 3,000 values are not numbers", "'far'"),
        "all-null column": (all_null, r"humid: 3,000 of 3,000 values \(100\.00%\) are null", None),
        "out-of-range": (out_of_range, r"distance: 3 of 3,000 values .* outside \[1, 6000\]", "-5"),
        "hour 24/25": (bad_hour, r"dep_hour: 2 of 3,000 values .* not in the allowed set", "'24'"),
        "unknown categories": (
            unknown_categories,
            r"dest: 30\d of 3,000 values \(10\.\d\d%\) were never seen in the reference; "
            r"at most 5% allowed",
            "'XNA-NEW'",
        ),
        "duplicate ids": (duplicate_ids, r"flight_id: 4 of 3,000 values .* are duplicated", None),
        "too few rows": (too_few_rows, r"table: 200 rows; the spec expects 1,000 to 200,000", None),
        "fractional category": (
            fractional_category,
            r"day_of_week: 3,000 values are fractional numbers",
            "0.5",
        ),
        "unparseable timestamp": (
            unparseable_timestamp,
            r"sched_dep: 1 of 3,000 values are not timestamps",
            "'yesterday'",
        ),
    }


MUTATIONS = _mutations()


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_bad_batch_is_quarantined_with_a_clear_message(
    tmp_path, spec, march, flights_year, case
) -> None:
    mutate, pattern, example = MUTATIONS[case]
    store = LocalStore(tmp_path / "store")
    create_reference(store, spec, flights_year[1][0].head(5000), "ref")
    good = ingest_frame(store, spec, march, "b1").ref
    good_bytes = store.get_bytes("datasets/flights/batches/b1/v1/features.parquet")
    bad = ingest_frame(store, spec, mutate(march.copy()), "b1", new_version=True).ref
    assert bad.version == 2
    with pytest.raises(ValidationFailed) as info:
        validate_batch(store, spec, bad, reference_id="ref")
    message = str(info.value)
    assert message.startswith("batch flights/b1/v2 failed validation")
    assert "quarantined at" in message
    matching = [line for line in message.splitlines() if re.search(pattern, line)]
    assert matching, message
    if example is not None:
        assert "e.g. " in matching[0]
        assert example in matching[0].split("e.g. ", 1)[1], matching[0]
    # the failing version moved to quarantine, with the result beside it
    assert committed_versions(store, "flights", "b1") == [1]
    assert committed_versions(store, "flights", "b1", "quarantine") == [2]
    evidence = json.loads(store.get_bytes("datasets/flights/quarantine/b1/v2/validation.json"))
    assert evidence["stage"] == "validation"
    assert evidence["success"] is False
    assert evidence["errors"]
    assert store.exists("datasets/flights/quarantine/b1/v2/features.parquet")
    assert store.exists("datasets/flights/quarantine/b1/v2/gx_result.json")
    assert info.value.summary.docs_uri is not None
    # the good version is untouched and still what "b1" resolves to
    assert store.get_bytes("datasets/flights/batches/b1/v1/features.parquet") == good_bytes
    assert resolve_batch(store, "flights", "b1") == good
    with pytest.raises(BatchNotFound, match="was quarantined"):
        resolve_batch(store, "flights", "b1", 2)


def test_zero_rows_fail_the_row_count(spec, march) -> None:
    summary = validate_frame(march.head(0), spec, ref=BatchRef("flights", "empty", 1))
    assert not summary.success
    lines = [f.line() for f in summary.failed]
    assert any("table: 0 rows; the spec expects 1,000" in line for line in lines), lines


def test_unseen_categories_below_the_limit_pass(spec, march, flights_year) -> None:
    categories = {
        "carrier": sorted(flights_year[1][0]["carrier"].unique()),
        "dest": sorted(flights_year[1][0]["dest"].unique()),
    }
    few = march.copy()
    few.loc[:29, "dest"] = "NEW"  # 1% unseen, 5% allowed
    summary = validate_frame(few, spec, ref=BatchRef("flights", "b", 1), categories=categories)
    assert summary.success, summary.message()


# ------------------------------------------------------------------------------ user expectations


def test_users_add_expectations_in_the_spec(spec, march) -> None:
    strict = spec.model_copy(
        update={
            "expectations": (
                Expectation(
                    type="expect_column_max_to_be_between",
                    kwargs={"column": "distance", "max_value": 1000},
                ),
            )
        }
    )
    summary = validate_frame(march, strict, ref=BatchRef("flights", "b", 1))
    assert not summary.success
    [failure] = summary.failed
    assert failure.column == "distance"
    assert failure.rule == "expectations[0] of the spec"
    longest = int(march["distance"].max())  # a flight to Honolulu
    assert failure.summary == f"observed {longest}; expected max_value=1000"


@pytest.mark.parametrize(
    ("expectation", "message"),
    [
        (Expectation(type="expect_column_to_be_nice", kwargs={}), "is not a Great Expectations"),
        (
            Expectation(type="expect_column_max_to_be_between", kwargs={"colum": "distance"}),
            "invalid arguments for expect_column_max_to_be_between",
        ),
    ],
)
def test_bad_user_expectations_are_clear(spec, march, expectation, message) -> None:
    bad = spec.model_copy(update={"expectations": (expectation,)})
    with pytest.raises(SuiteError, match=rf"expectations\[0\] of the spec: .*{message}"):
        validate_frame(march, bad, ref=BatchRef("flights", "b", 1))
