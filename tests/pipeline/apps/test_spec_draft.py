"""``python -m pipeline spec draft``: a spec from sample files that loads and passes
validation (Great Expectations) on the data it was drafted from: a data set built
here (every rule checked against a value recomputed from the samples), the GSS
example's waves and a month of the bundled flights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.apps.cli import main
from pipeline.apps.examples import write_example
from pipeline.base.store import LocalStore
from pipeline.steps.landing.ingest import ingest_frame
from pipeline.steps.quality.draft import MAX_DOMAIN, UNSEEN_SHARE
from pipeline.steps.quality.validation import validate_batch
from training.data import flights
from training.data.spec import DatasetSpec, load_spec

CITIES = [f"city{i:02d}" for i in range(MAX_DOMAIN + 10)]


def _month(i: int, rows: int = 400) -> pd.DataFrame:
    """Customers (the same 400 every month), a text plan, 30 cities, a 0/1 flag, an
    integer tenure, a spend with nulls; the target beside them."""
    rng = np.random.default_rng(i)
    spend = rng.gamma(2.0, 30.0, rows)
    spend[rng.permutation(rows)[: 20 + 10 * i]] = np.nan
    return pd.DataFrame(
        {
            "cust": [f"c{j:04d}" for j in range(rows)],
            "seen_at": pd.Timestamp(f"2024-0{i}-01")
            + pd.to_timedelta(rng.integers(0, 600, rows), "h"),
            "plan": rng.choice(["basic", "pro", "team"], rows),
            "city": rng.choice(CITIES, rows),
            "flag": rng.integers(0, 2, rows),
            "tenure": rng.integers(3, 121, rows),
            "spend": spend,
            "churned": rng.integers(0, 2, rows),
        }
    )


def _draft(tmp_path: Path, files: list[Path], *flags: str) -> DatasetSpec:
    out = tmp_path / "drafted.yaml"
    assert main(["spec", "draft", *map(str, files), *flags, "-o", str(out), "--force"]) == 0
    assert out.read_text().startswith("# Drafted by `python -m pipeline spec draft`")
    return load_spec(out)


def _validates(tmp_path: Path, spec: DatasetSpec, batches: dict[str, pd.DataFrame]) -> None:
    """Each sample, without its target, lands and passes the drafted spec's suite."""
    store = LocalStore(tmp_path / "store")
    for batch_id, frame in batches.items():
        landed = ingest_frame(store, spec, frame.drop(columns=[spec.target]), batch_id)
        summary = validate_batch(store, spec, landed.ref)
        assert summary.success, summary


def test_a_data_set_built_here(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    months = {f"2024-0{i}": _month(i) for i in (1, 2, 3)}
    files = []
    for i, (batch_id, frame) in enumerate(months.items()):
        path = tmp_path / f"{batch_id}.{'csv' if i else 'parquet'}"
        if i:
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        files.append(path)
    spec = _draft(tmp_path, files, "--id", "cust", "--timestamp", "seen_at", "--target", "churned")
    assert (spec.name, spec.model_name, spec.target) == ("drafted", "drafted_model", "churned")
    assert spec.id_scope == "batch"  # the same customers in every month
    assert (spec.row_count_min, spec.row_count_max) == (200, 800)
    everything = pd.concat(months.values(), ignore_index=True)
    plan, city, flag = spec.column("plan"), spec.column("city"), spec.column("flag")
    assert (plan.role, plan.allowed) == ("categorical", ("basic", "pro", "team"))
    assert (city.role, city.allowed, city.max_unseen_share) == ("categorical", None, UNSEEN_SHARE)
    assert (flag.role, flag.allowed) == ("categorical", ("0", "1"))
    tenure = spec.column("tenure")
    lo, hi = everything["tenure"].min(), everything["tenure"].max()
    assert (tenure.role, tenure.max_null_share) == ("numeric", 0)
    low, high = max(0, math.floor(lo - 0.1 * (hi - lo))), math.ceil(hi + 0.1 * (hi - lo))
    assert (tenure.min, tenure.max) == (low, high)  # never below 0: it never was
    spend = spec.column("spend")
    share = everything["spend"].isna().mean()
    assert spend.max_null_share == pytest.approx(math.ceil((share * 1.5 + 0.01) * 100) / 100)
    s_lo, s_hi = everything["spend"].min(), everything["spend"].max()
    assert spend.min == 0.0  # never negative: the widened range stops at 0
    assert s_hi + 0.1 * (s_hi - s_lo) <= spend.max <= (s_hi + 0.1 * (s_hi - s_lo)) * 1.001
    _validates(tmp_path, spec, months)
    # ids that never recur across the files: global
    other = {b: f.assign(cust=f["cust"] + "-" + b) for b, f in months.items()}
    paths = []
    for b, f in other.items():
        paths.append(tmp_path / f"g{b}.csv")
        f.to_csv(paths[-1], index=False)
    assert (
        _draft(
            tmp_path, paths, "--id", "cust", "--timestamp", "seen_at", "--target", "churned"
        ).id_scope
        == "global"
    )


def test_mistakes_are_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.csv"
    _month(1).assign(churned=lambda f: f["churned"] * 3).to_csv(path, index=False)
    flags = ["--id", "cust", "--timestamp", "seen_at"]
    assert main(["spec", "draft", str(path), *flags, "--target", "churned"]) == 2
    assert "--target 'churned' must hold 0 and 1" in capsys.readouterr().err
    assert main(["spec", "draft", str(path), *flags, "--target", "nope"]) == 2
    assert "--target 'nope' is not a column of the files" in capsys.readouterr().err
    assert (
        main(
            [
                "spec",
                "draft",
                str(path),
                "--id",
                "plan",
                "--timestamp",
                "seen_at",
                "--target",
                "flag",
            ]
        )
        == 2
    )
    assert "--id 'plan' repeats within the file" in capsys.readouterr().err


def test_the_gss_example(tmp_path: Path) -> None:
    files = write_example("gss", tmp_path / "gss")
    spec = _draft(
        tmp_path,
        files,
        "--id",
        "respondent_id",
        "--timestamp",
        "survey_date",
        "--target",
        "vhappy",
        "--name",
        "gss",
    )
    assert spec.id_scope == "global"  # "<wave>-<row>": never twice
    assert set(spec.feature_columns) == set(load_spec("configs/datasets/gss.yaml").feature_columns)
    waves = {p.stem: pd.read_csv(p) for p in files if p.stem in ("1994", "2006")}
    _validates(tmp_path, spec, waves)


def test_a_month_of_flights(tmp_path: Path) -> None:
    features, labels = flights.load_months([3])
    shipped = load_spec("configs/datasets/flights.yaml")
    month = features.merge(labels, on=shipped.id_column)
    path = tmp_path / "2013-03.parquet"
    month.to_parquet(path, index=False)
    spec = _draft(
        tmp_path,
        [path],
        *("--id", shipped.id_column, "--timestamp", shipped.timestamp_column),
        *("--target", shipped.target, "--name", "flights"),
    )
    assert set(spec.feature_columns) == set(shipped.feature_columns) | (
        set(month.columns) - set(shipped.column_names) - {shipped.target}
    )
    _validates(tmp_path, spec, {"2013-03": month})
