"""Dataset specs: what a tabular data set looks like, in one small YAML file.

A spec names the id column, the timestamp used for chronological splits, the
target (delivered separately, as labels arrive later than features), and each
column with its role and its constraints. The training job uses it to select
and preprocess features; the pipeline builds its Great Expectations suite from
the same constraints, and users add expectations in the file without code.

The pipeline is dataset-agnostic: flights is one spec
(``configs/datasets/flights.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from training.config.text import read_yaml
from training.schedule.epochs import CycleBounds

__all__ = [
    "BATCH_COLUMN",
    "ColumnSpec",
    "DataError",
    "DatasetSpec",
    "Expectation",
    "Promotion",
    "ScheduleBounds",
    "load_spec",
]

Role = Literal["id", "timestamp", "categorical", "numeric"]
IdScope = Literal["batch", "global"]

# The column the pipeline adds to a training window's features and labels: the batch each
# row came from. Rows are keyed by (batch, id); no spec column may take this name.
BATCH_COLUMN = "_batch"


class DataError(ValueError):
    """Data or a dataset spec does not fit: the message names the column and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Strict):
    """One column of a feature batch.

    ``max_null_share``: largest allowed share of nulls (0 = never null).
    ``min``/``max``: inclusive bounds for numeric columns; ``range_mostly``:
    share of non-null values that must respect them (1.0 = all; lower it for
    a source with known stray values). ``allowed``: closed set of categories.
    ``max_unseen_share``: largest share of rows whose category the reference
    (training) data never saw; above it, validation fails.
    """

    name: str = Field(min_length=1)
    role: Role
    description: str = ""
    max_null_share: float = Field(default=0.0, ge=0.0, le=1.0)
    min: float | None = None
    max: float | None = None
    range_mostly: float = Field(default=1.0, gt=0.0, le=1.0)
    allowed: tuple[str, ...] | None = None
    max_unseen_share: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSpec:
        if self.role != "numeric" and (self.min is not None or self.max is not None):
            raise ValueError(f"column {self.name!r}: min/max apply to numeric columns only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"column {self.name!r}: min {self.min} > max {self.max}")
        if self.role != "categorical" and (
            self.allowed is not None or self.max_unseen_share is not None
        ):
            raise ValueError(
                f"column {self.name!r}: allowed/max_unseen_share apply to categorical columns only"
            )
        if self.role in ("id", "timestamp") and self.max_null_share:
            raise ValueError(f"column {self.name!r}: a {self.role} column can never be null")
        return self

    @field_validator("allowed", mode="before")
    @classmethod
    def _as_strings(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError("allowed must be a list of categories")
        return tuple(str(v) for v in value)


class Expectation(_Strict):
    """An extra Great Expectations expectation, e.g.
    ``{type: expect_column_mean_to_be_between, kwargs: {column: distance, min_value: 500}}``."""

    type: str = Field(pattern=r"^expect_[a-z0-9_]+$")
    kwargs: dict[str, Any] = Field(default_factory=dict)


class ScheduleBounds(_Strict):
    """This data set's bounds on the training schedule's first cycle, in optimizer steps
    (used when the training config gives the cycle in epochs and sets no bound itself)."""

    min_cycle_steps: int | None = Field(default=None, ge=1)
    max_cycle_steps: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> ScheduleBounds:
        self.bounds()
        return self

    def bounds(self) -> CycleBounds:
        return CycleBounds(self.min_cycle_steps, self.max_cycle_steps)


class Promotion(_Strict):
    """This data set's promotion rules; each one unset here falls back to the pipeline's
    config default (gate floors) or to a value derived from the batch sizes seen (the
    canary's minimum rows). A value set explicitly in the pipeline's config wins."""

    min_auc: float | None = Field(default=None, gt=0.0, le=1.0)
    min_slice_auc: float | None = Field(default=None, gt=0.0, le=1.0)
    max_auc_drop: float | None = Field(default=None, ge=0.0, le=1.0)
    canary_share: float | None = Field(default=None, gt=0.0, lt=1.0)
    canary_min_rows: int | None = Field(default=None, ge=10)


class DatasetSpec(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    model_name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$")
    description: str = ""
    id_column: str
    # "batch": an id is unique within one batch and may recur in others (a panel: the same
    # customers every month); rows are keyed by (batch, id). "global": ids never recur
    # (a flight, an order); a training window holding an id twice is refused.
    id_scope: IdScope = "batch"
    timestamp_column: str
    target: str
    target_description: str = ""
    columns: tuple[ColumnSpec, ...]
    row_count_min: int = Field(default=1, ge=1)
    row_count_max: int = Field(default=10_000_000, ge=1)
    slices: tuple[str, ...] = ()
    slice_min_rows: int = Field(default=200, ge=1)
    expectations: tuple[Expectation, ...] = ()
    schedule: ScheduleBounds = Field(default_factory=ScheduleBounds)
    promotion: Promotion = Field(default_factory=Promotion)

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"columns listed twice: {dupes}")
        by_name = {c.name: c for c in self.columns}
        if BATCH_COLUMN in by_name or self.target == BATCH_COLUMN:
            raise ValueError(
                f"the name {BATCH_COLUMN!r} is reserved for the pipeline's batch id: rename it"
            )
        for attr, role in (("id_column", "id"), ("timestamp_column", "timestamp")):
            col = by_name.get(getattr(self, attr))
            if col is None or col.role != role:
                raise ValueError(
                    f"{attr} {getattr(self, attr)!r} must be a column with role {role}"
                )
        if self.target in by_name:
            raise ValueError(
                f"target {self.target!r} must not be a feature column (labels arrive separately)"
            )
        for s in self.slices:
            if by_name.get(s) is None or by_name[s].role != "categorical":
                raise ValueError(f"slice {s!r} must be a categorical column")
        if not self.feature_columns:
            raise ValueError("the spec has no feature columns (role categorical or numeric)")
        if self.row_count_min > self.row_count_max:
            raise ValueError(
                f"row_count_min {self.row_count_min} > row_count_max {self.row_count_max}"
            )
        return self

    # -- views ---------------------------------------------------------------------------

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def categorical_features(self) -> list[str]:
        return [c.name for c in self.columns if c.role == "categorical"]

    @property
    def numeric_features(self) -> list[str]:
        return [c.name for c in self.columns if c.role == "numeric"]

    @property
    def feature_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.role in ("categorical", "numeric")]

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    # -- checks the training job needs (the pipeline's GX suite checks much more) ---------

    def check_features(self, frame: pd.DataFrame, what: str = "data") -> None:
        """Refuse a frame the model cannot be trained on or score, naming each problem."""
        if len(frame) == 0:
            raise DataError(f"{what} has no rows")
        missing = [c for c in self.column_names if c not in frame.columns]
        if missing:
            raise DataError(
                f"{what} lacks column(s) {missing} required by dataset spec {self.name!r}"
            )
        problems = []
        for name in self.numeric_features:
            if as_double(frame[name]) is None:  # numbers of any dtype; all-null is fine
                problems.append(f"{name} should be numeric but is {frame[name].dtype}")
        for name in self.categorical_features:
            dtype = frame[name].dtype
            if pd.api.types.is_float_dtype(dtype):
                non_int = frame[name].dropna() % 1 != 0
                if non_int.any():
                    problems.append(f"{name} is categorical but holds fractional numbers")
        if problems:
            raise DataError(f"{what} has columns of the wrong type: " + "; ".join(problems))

    def check_ids(self, frame: pd.DataFrame, what: str, batch_column: str | None = None) -> None:
        """The id column is never null and unique (what validation's suite expects).

        With ``batch_column`` (a training window of several batches) an id must be unique
        within its batch; across batches too when the spec's ``id_scope`` is ``global``."""
        ids = frame[self.id_column]
        nulls = int(ids.isna().sum())
        if nulls:
            raise DataError(
                f"{what}: id column {self.id_column!r} has {nulls} null value(s): every row "
                "needs an id"
            )
        keys = [self.id_column]
        if batch_column is not None and self.id_scope == "batch":
            keys = [batch_column, self.id_column]
        dupes = ids[frame.duplicated(keys, keep=False)]
        if len(dupes):
            shown = list(dict.fromkeys(dupes.tolist()))[:3]
            where = " within one batch" if len(keys) == 2 else ""
            hint = "each row needs its own id"
            if batch_column is None and what == "features":
                hint += (
                    " (an entity seen in several batches: set data.batch_column to the "
                    "column that names each row's batch)"
                )
            elif len(keys) == 1:
                hint += (
                    " (the spec's id_scope is 'global'; set id_scope: batch when the same "
                    "entity recurs in every batch)"
                )
            raise DataError(
                f"{what}: id column {self.id_column!r} holds duplicate ids{where} ({len(dupes)} "
                f"rows share {dupes.nunique()} id(s)), e.g. {shown}: {hint}"
            )

    def check_labels(self, labels: pd.DataFrame, what: str = "labels") -> None:
        """The target of every label is 0 or 1 (never null); the message shows example ids."""
        target = labels[self.target]
        if pd.api.types.is_bool_dtype(target):
            target = target.astype("int64")
        bad = target.isna() | ~target.isin([0, 1])
        if bad.any():
            ids = labels.loc[bad, self.id_column].head(3).tolist()
            values = sorted({"null" if pd.isna(v) else str(v) for v in target[bad].head(1000)})[:5]
            raise DataError(
                f"{what}: target {self.target!r} must be 0 or 1 (never null) but {int(bad.sum())} "
                f"row(s) hold {values}, e.g. ids {ids}"
            )

    def check_target(self, target: pd.Series, what: str = "training data") -> None:
        values = pd.Series(target).dropna()
        if len(values) != len(target):
            raise DataError(f"{what}: target {self.target!r} has {len(target) - len(values)} nulls")
        uniq = set(values.unique().tolist())
        if not uniq <= {0, 1}:  # True == 1 and False == 0 in a set
            shown = sorted(map(str, uniq))[:5]
            raise DataError(f"{what}: target {self.target!r} must be 0/1, found {shown}")
        if len(uniq) < 2:
            raise DataError(
                f"{what}: target {self.target!r} has a single class ({uniq.pop()}); "
                "a classifier needs both (widen the training window)"
            )


def load_spec(path: str | Path) -> DatasetSpec:
    """Read a spec YAML; every mistake is a DataError naming the file and field."""
    path = Path(path)
    raw = read_yaml(path, "dataset spec", DataError)
    if not isinstance(raw, dict):
        raise DataError(f"dataset spec {path} must be a mapping")
    cols = raw.get("columns")
    if isinstance(cols, dict):  # the readable form: {name: {role: ..., ...}}
        raw["columns"] = [{"name": k, **(v or {})} for k, v in cols.items()]
    try:
        return DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        names = [
            c.get("name", "?") if isinstance(c, dict) else "?" for c in raw.get("columns") or []
        ]
        lines = []
        for e in exc.errors():
            loc = list(e["loc"])
            if (
                len(loc) > 1
                and loc[0] == "columns"
                and isinstance(loc[1], int)
                and loc[1] < len(names)
            ):
                loc[1] = names[loc[1]]
            lines.append(f"  {'.'.join(str(p) for p in loc) or '(spec)'}: {e['msg']}")
        raise DataError(f"dataset spec {path} is invalid:\n" + "\n".join(lines)) from None


def categories_as_str(values: pd.Series) -> pd.Series:
    """Categorical values as strings, the one normalisation everything shares.

    Integers and integral floats become ``"3"`` (never ``"3.0"``), strings stay
    as they are, nulls stay null. Preprocessing, validation and drift all call
    this, so ``3``, ``3.0`` and ``"3"`` are the same category everywhere.
    """
    if pd.api.types.is_bool_dtype(values):
        return values.map({True: "True", False: "False"}).astype(object)
    if pd.api.types.is_integer_dtype(values):
        return values.astype("Int64").astype(str).where(values.notna(), None).astype(object)
    if pd.api.types.is_float_dtype(values):
        out = values.map(
            lambda v: None if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v))
        )
        return out.astype(object)
    return values.map(
        lambda v: None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)
    ).astype(object)


# what pandas infers for an object column that holds only numbers (or only nulls)
NUMBERS = ("empty", "integer", "floating", "mixed-integer-float", "decimal")


def as_double(col: pd.Series) -> np.ndarray | None:
    """A numeric column as float64 with NaN for nulls, or None when it is not numeric.

    Numbers of any width (nullable ``Int64``/``Float64`` included) convert; so does an
    object column whose every non-null value is a number, and an all-null one (what
    a JSON payload or a Parquet column of nulls gives): a numeric role is numeric whatever
    dtype the frame inferred. Booleans and text are not numbers.
    """
    if pd.api.types.is_bool_dtype(col):
        return None
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    if col.dtype != object or pd.api.types.infer_dtype(col, skipna=True) not in NUMBERS:
        return None
    return pd.to_numeric(col, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
