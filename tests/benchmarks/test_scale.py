"""The scale benchmark's batches: flights-shaped, in their month, and valid.

``./run bench scale`` times the loop on batches generated from the 2013 example; its
figures mean something only if the batches pass the same validation as real months
(else the steps after it measure a refusal) and keep each row's label with its row."""

from __future__ import annotations

import numpy as np

from benchmarks.scale import SPEC, _batch
from pipeline.base.layout import BatchRef
from pipeline.base.sections import ValidationConfig
from pipeline.steps.quality.validation import validate_frame
from training.api import load_spec
from training.data.flights import load_months


def test_a_generated_batch_is_in_its_month_keeps_its_labels_and_passes_the_suite() -> None:
    year, labels = load_months(list(range(1, 13)))
    features, target = _batch(year, labels, 20_000, "2016-02", seed=3)
    assert len(features) == len(target) == 20_000
    assert features["flight_id"].is_unique
    assert (features["flight_id"] == target["flight_id"]).all()
    dep = features["sched_dep"]
    assert (dep.dt.year == 2016).all()
    assert (dep.dt.month == 2).all()
    # each row's label is the label of the year's row it was drawn from: the departure's
    # time of day and the carrier are kept, so the late share by carrier matches the year's
    drawn = target.assign(carrier=features["carrier"]).groupby("carrier")["late"]
    big = drawn.count()[lambda n: n >= 1000].index  # standard error under 0.016
    expected = labels.assign(carrier=year["carrier"]).groupby("carrier")["late"].mean()
    assert len(big) >= 5
    assert np.abs(drawn.mean()[big] - expected[big]).max() < 0.05
    for column in year.select_dtypes("float64").columns:  # noised within the year's range
        assert features[column].min() >= year[column].min()
        assert features[column].max() <= year[column].max()
    spec = load_spec(SPEC)
    ref = BatchRef(spec.name, "2016-02", 1)
    summary = validate_frame(features, spec, ref=ref, config=ValidationConfig(data_docs=False))
    assert summary.success, summary.failed
