"""A panel data set: the same entities in every batch, their ids recurring.

Rows are keyed by (batch, id) when the data names each row's batch
(``data.batch_column``, what the pipeline's windows carry); duplicate ids inside
one batch stay an error, and ``id_scope: global`` refuses an id seen in two
batches. The split is time-ordered: an entity's earlier rows train, its latest are
held out. A small window trains with a batch halved to fit (``optim.batch_size``
scales with the rows, as the schedule's epochs do).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.spec_support import spec_fields
from training.cli.main import main
from training.config.train import DataConfig, OptimConfig
from training.data.dataset import join_labels, prepare
from training.data.spec import BATCH_COLUMN, DataError, load_spec

SPEC = spec_fields(
    "panel",
    model_name="panel_model",
    id_column="person",
    timestamp_column="wave_date",
    target="happy",
    features={"region": "categorical", "income": {"role": "numeric", "min": 0, "max": 1000}},
)
WAVES = ("2001", "2002", "2003")


def panel(people: int = 300, waves: tuple[str, ...] = WAVES) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every person in every wave (integer ids, as a survey has them); the label of a
    (wave, person) depends on that wave's income, so a join on the id alone is wrong."""
    rng = np.random.default_rng(7)
    features, labels = [], []
    for w in waves:
        income = rng.uniform(0, 1000, size=people)
        happy = (rng.random(people) < 1 / (1 + np.exp(-(income - 500) / 150))).astype(int)
        ids = rng.permutation(people)  # another row order in every wave
        features.append(
            pd.DataFrame(
                {
                    "person": ids,
                    "wave_date": pd.Timestamp(f"{w}-06-01"),
                    "region": rng.choice(["n", "s", "e", "w"], size=people),
                    "income": income,
                    BATCH_COLUMN: w,
                }
            )
        )
        labels.append(pd.DataFrame({"person": ids, "happy": happy, BATCH_COLUMN: w}))
    return pd.concat(features, ignore_index=True), pd.concat(labels, ignore_index=True)


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    path = tmp_path / "panel.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def _files(root: Path, features: pd.DataFrame, labels: pd.DataFrame) -> tuple[Path, Path]:
    f, lab = root / "features.parquet", root / "labels.parquet"
    features.to_parquet(f, index=False)
    labels.to_parquet(lab, index=False)
    return f, lab


def test_each_row_gets_the_label_of_its_own_batch(spec_path: Path) -> None:
    spec = load_spec(spec_path)
    assert spec.id_scope == "batch"  # the default: ids recur across batches
    features, labels = panel()
    joined = join_labels(features, labels, spec, BATCH_COLUMN)
    assert len(joined) == len(features)  # every (wave, person) once
    # the reference: each (wave, person)'s label, looked up row by row
    truth = {(b, p): y for b, p, y in labels[[BATCH_COLUMN, "person", "happy"]].itertuples(False)}
    got = [truth[(b, p)] for b, p in joined[[BATCH_COLUMN, "person"]].itertuples(False)]
    assert joined["happy"].tolist() == got
    # and the id alone would not do: a person's label differs between waves
    assert labels.groupby("person")["happy"].nunique().max() == 2


def test_a_duplicate_id_inside_one_batch_stays_an_error(spec_path: Path) -> None:
    spec = load_spec(spec_path)
    features, labels = panel()
    twice = pd.concat([features, features.iloc[[5]]], ignore_index=True)
    person = features.iloc[5]["person"]
    with pytest.raises(DataError, match=r"duplicate ids within one batch .*\[" + str(person)):
        join_labels(twice, labels, spec, BATCH_COLUMN)


def test_without_a_batch_column_the_error_says_how_to_key_by_batch(spec_path: Path) -> None:
    features, labels = panel()
    with pytest.raises(DataError, match=r"set data\.batch_column to the column that names"):
        join_labels(features, labels, load_spec(spec_path))


def test_id_scope_global_refuses_an_id_seen_in_two_batches(tmp_path: Path) -> None:
    path = tmp_path / "global.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "id_scope": "global"}))
    features, labels = panel()
    with pytest.raises(DataError, match="id_scope is 'global'; set id_scope: batch"):
        join_labels(features, labels, load_spec(path), BATCH_COLUMN)
    path.write_text(yaml.safe_dump({**SPEC, "id_scope": "panel"}))
    with pytest.raises(DataError, match="id_scope"):
        load_spec(path)


def test_the_batch_column_name_is_reserved(tmp_path: Path) -> None:
    path = tmp_path / "reserved.yaml"
    columns = [*SPEC["columns"], {"name": BATCH_COLUMN, "role": "numeric"}]
    path.write_text(yaml.safe_dump({**SPEC, "columns": columns}))
    with pytest.raises(DataError, match=f"{BATCH_COLUMN!r} is reserved"):
        load_spec(path)


def test_the_split_is_time_ordered_across_batches(spec_path: Path, tmp_path: Path) -> None:
    spec = load_spec(spec_path)
    f, lab = _files(tmp_path, *panel())
    config = DataConfig(
        dataset=spec_path,
        source="files",
        features=str(f),
        labels=str(lab),
        batch_column=BATCH_COLUMN,
        valid_fraction=1 / 3,
    )
    data = prepare(config, spec, min_category_count=1)
    assert len(data.train) + len(data.valid) == 900
    # the latest wave is held out whole; every person in it trained on earlier waves
    assert set(data.valid_frame["wave_date"]) == {pd.Timestamp("2003-06-01")}
    assert BATCH_COLUMN not in data.valid_frame.columns  # the holdout is features + target
    assert set(data.valid.ids) == set(data.train.ids)
    assert len(data.valid) == 300


@pytest.mark.parametrize(
    ("rows", "unit", "batch"),
    [(64_631, 1, 512), (1024, 1, 512), (1023, 1, 256), (349, 1, 128), (349, 4, 128), (10, 1, 4)],
)
def test_the_batch_halves_until_the_rows_fill_two(rows: int, unit: int, batch: int) -> None:
    optim = OptimConfig(batch_size=512, grad_accum_steps=unit)
    # the reference: the largest 512 / 2**k (a multiple of the unit) that two batches fit
    sizes = [512 >> k for k in range(10) if (512 >> k) % unit == 0 and (512 >> k) >= 1]
    expected = next((s for s in sizes if 2 * s <= rows), sizes[-1])
    assert optim.batch_size_for(rows) == expected == batch


def test_a_panel_of_436_rows_trains_with_the_shipped_batch_size(
    spec_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's first window: 436 labelled rows, optim.batch_size 512 as shipped."""
    features, labels = panel(people=218, waves=("2001", "2002"))
    f, lab = _files(tmp_path, features, labels)
    argv = ["train", "--output-dir", str(tmp_path / "runs"), "--no-mlflow", "--run-name", "p"]
    argv += ["--dataset", str(spec_path), "--features", str(f), "--labels", str(lab)]
    for item in (f"data.batch_column={BATCH_COLUMN}", "model.hidden=[16]", "progress=off"):
        argv += ["--set", item]
    argv += ["--set", "schedule.max_cycles=1"]
    rc = main(argv)
    _, err = capsys.readouterr()
    assert rc == 0, err
    result = json.loads((tmp_path / "runs" / "p" / "result.json").read_text())
    train_rows = result["data"]["rows_train"]
    assert train_rows + result["data"]["rows_valid"] == 436
    # 349 training rows: 512 and 256 fill fewer than two batches, 128 fills two
    assert result["schedule"]["steps_per_epoch"] == train_rows // 128 == 2
