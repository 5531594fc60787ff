"""A small dataset that is not flights: loan applications, one batch a month.

Its spec is written to a YAML file and loaded the way production loads a spec
(:func:`training.data.spec.load_spec`); batches are generated from a seed.
``region`` is the column a new user meets: empty for months, then filled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.data.spec import DatasetSpec, load_spec

SPEC = """\
name: loans
model_name: loan_default
description: Loan applications, one row per application.
id_column: application_id
timestamp_column: applied_at
target: defaulted
row_count_min: 100
row_count_max: 100000
columns:
  application_id: {{role: id}}
  applied_at:     {{role: timestamp}}
  purpose:        {{role: categorical, allowed: [car, home, study, other]}}
  region:         {{role: categorical, max_null_share: {region_nulls}}}
  income:         {{role: numeric, min: 0, max: 500000, max_null_share: {income_nulls}}}
  term_months:    {{role: numeric, min: 6, max: 84}}
"""

REGIONS = ["north", "south", "east", "west"]


def write_spec(path: Path, *, region_nulls: float = 1.0, income_nulls: float = 0.5) -> Path:
    path.write_text(SPEC.format(region_nulls=region_nulls, income_nulls=income_nulls))
    return path


def spec(tmp_path: Path, **kwargs: float) -> DatasetSpec:
    return load_spec(write_spec(tmp_path / "loans.yaml", **kwargs))


def batch(
    month: str,
    rows: int = 600,
    *,
    seed: int = 0,
    region_nulls: float = 0.0,
    income_nulls: float = 0.0,
) -> pd.DataFrame:
    """One month of applications (``month`` like ``2024-03``); exact null shares:
    the first ``round(rows * share)`` rows are null (then shuffled by the seed)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(f"{month}-01")
    frame = pd.DataFrame(
        {
            "application_id": [f"{month}-{i:05d}" for i in range(rows)],
            "applied_at": start + pd.to_timedelta(rng.integers(0, 27 * 24 * 60, rows), "min"),
            "purpose": rng.choice(["car", "home", "study", "other"], rows),
            "region": pd.Series(rng.choice(REGIONS, rows), dtype=object),
            "income": np.round(rng.lognormal(10.5, 0.5, rows).clip(0, 500_000), 2),
            "term_months": rng.choice([12, 24, 36, 48, 60], rows).astype(float),
        }
    )
    for column, share in (("region", region_nulls), ("income", income_nulls)):
        nulls = rng.permutation(rows)[: round(rows * share)]
        frame.loc[nulls, column] = None
    return frame
