"""The training rows in bounded memory: Parquet row groups read, shuffled and dealt out.

The streaming counterpart of :func:`training.data.dataset.prepare`, for Parquet
features that carry their label (the pipeline's window: one file per batch, each
row with its ``_batch`` and target, written by ``export_window``; no global join is
needed). Same rows, same split, same preprocessor as the in-memory path, reached in
passes over its units (row groups, or slices of large ones:
:mod:`training.data.sources`), never the whole table:

1. keys: the timestamp, id (and batch) and target of every row; a row whose target
   is null has no label yet and is left out, as the in-memory join leaves it out.
2. the cut: the in-memory path sorts by (timestamp, batch, id) and holds out the
   latest ``valid_fraction`` (after keeping the latest ``max_rows``). Here the
   timestamp of the first held-out row is selected exactly
   (:class:`~training.data.select.KthSmallest`), and the rows that share it are
   ordered by (batch, id) as pandas sorts them (their keys are held: memory grows with
   the rows that share that one timestamp). Each unit keeps two bit masks
   (training, validation): two bits a row, the only memory that grows with the rows.
3. statistics of the training rows, as :meth:`Preprocessor.fit` computes them:
   category counts (summed over groups), each numeric column's exact median (selected
   as in 2) and its mean and standard deviation after filling gaps with the median
   (merged from per-group moments: equal to numpy's over the whole column up to
   rounding, 1e-12 relative, tested).

Training then reads the units in an order that is a pure function of the seed
and the step (:class:`TrainStream`): each epoch a seeded permutation of the groups,
rank ``r`` of ``W`` taking units ``r::W``, ``data.shuffle_units`` consecutive units
at a time shuffled together. Nothing but the step is needed to find the position,
so resume after SIGKILL (and a NaN rollback) is bit-identical with no extra state in
the checkpoint. An epoch is a pass of each rank over its share.

Validation rows are predicted a unit at a time; only their targets and logits
(8 bytes a row) are held. The raw validation frame (what the registry's slice
metrics read) is a bounded, evenly spaced sample (:data:`VALID_SAMPLE_ROWS`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from training.config.train import DataConfig
from training.data.order import Arrays, TrainStream
from training.data.preprocess import Preprocessor
from training.data.select import KthSmallest, float_keys, key_floats
from training.data.sources import ParquetSource
from training.data.spec import DataError, DatasetSpec, as_double, categories_as_str

__all__ = ["VALID_SAMPLE_ROWS", "StreamSplit", "StreamedData", "open_stream"]

log = logging.getLogger(__name__)

VALID_SAMPLE_ROWS = 200_000  # the raw validation frame's rows at most (valid_frame)
VALID_CACHE_ROWS = 262_144  # validation arrays kept between evaluations up to this size


@dataclass(frozen=True)
class StreamSplit:
    """A part of the data by its counts (the rows stay on disk)."""

    rows: int
    positives: int

    def __len__(self) -> int:
        return self.rows


@dataclass(frozen=True)
class _Cut:
    """The first row, in (timestamp, batch, id) order, of a tail of the rows: every
    row after ``ts``, and the rows at ``ts`` whose key is in ``ties``."""

    ts: int
    ties: frozenset[tuple[object, ...]]

    def at_or_after(self, ts: np.ndarray, keys: pa.Table) -> np.ndarray:
        """Which rows of a group (timestamps ``ts``, key columns ``keys``) are in the tail."""
        mask = ts > self.ts
        at = np.flatnonzero(ts == self.ts)
        if len(at):  # only the few rows at the cut's timestamp become Python objects
            rows = keys.take(at).to_pandas().itertuples(index=False, name=None)
            mask[at] = [row in self.ties for row in rows]
        return mask


def _timestamps(table: pa.Table, column: str) -> np.ndarray:
    """int64 nanoseconds, as ``pd.to_datetime`` reads the column (UTC when zoned);
    NaT (unparseable) is the minimum int64."""
    values = pd.to_datetime(table[column].to_pandas(), errors="coerce")
    if getattr(values.dt, "tz", None) is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    return values.to_numpy(dtype="datetime64[ns]").view(np.int64)


class _Moments:
    """Count, mean and sum of squared deviations, merged as Chan et al. do."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, n: int, mean: float, m2: float) -> None:
        if n == 0:
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total

    def add_values(self, values: np.ndarray) -> None:
        if len(values):
            mean = float(values.mean())
            self.add(len(values), mean, float(((values - mean) ** 2).sum()))


class StreamedData:
    """The window, split and preprocessed, read from ``source`` a unit at a time."""

    def __init__(
        self,
        source: ParquetSource,
        spec: DatasetSpec,
        config: DataConfig,
        *,
        min_category_count: int = 5,
        max_categories: int = 1000,
        preprocessor: Preprocessor | None = None,
    ) -> None:
        self.source, self.spec, self.config = source, spec, config
        self.key_columns = [
            spec.timestamp_column,
            *([config.batch_column] if config.batch_column else []),
            spec.id_column,
        ]
        self.model_columns = [*spec.feature_columns, spec.target]
        labelled = self._scan_keys()  # bits, as the masks below
        n = self._labelled
        if n == 0:
            raise DataError("no feature row has a label: nothing to train on")
        keep = min(n, config.max_rows or n)
        n_valid = max(1, round(keep * config.valid_fraction))
        if keep - n_valid < 2:
            raise DataError(
                f"only {keep} labelled rows: too few to split into train and validation"
            )
        cuts = self._cuts(labelled, [n - keep, n - n_valid])
        self._masks(labelled, cuts)
        self.train = StreamSplit(int(self.train_rows.sum()), self._positives[0])
        self.valid = StreamSplit(int(self.valid_rows.sum()), self._positives[1])
        for part, what in ((self.train, "training data"), (self.valid, "validation data")):
            if part.positives in (0, part.rows):
                raise DataError(
                    f"{what}: target {spec.target!r} has a single class "
                    f"({int(part.positives > 0)}); a classifier needs both (widen the "
                    "training window)"
                )
        self.preprocessor = preprocessor or self._fit(min_category_count, max_categories)
        self.first_valid_time = str(pd.Timestamp(cuts[1].ts))
        digest = source.fingerprint()
        digest.update(f"streamed {n_valid} of {keep}".encode())
        self.fingerprint = digest.hexdigest()
        self._valid_cache: list[Arrays] | None = None

    # ---------------------------------------------------------------- passes

    def _scan_keys(self) -> list[np.ndarray]:
        """Pass 1: each group's labelled rows; the keys and targets checked."""
        spec, labelled, self._labelled = self.spec, [], 0
        self._ts_range = [np.iinfo(np.int64).max, np.iinfo(np.int64).min]
        for unit in self.source.units:
            table = self.source.read(unit, [*self.key_columns, spec.target])
            target = table[spec.target].to_pandas()
            has = target.notna().to_numpy()
            if pd.api.types.is_bool_dtype(target):
                target = target.astype("int64")
            bad = has & ~target.isin([0, 1]).to_numpy()
            where = self.source.shown[unit.file]
            if bad.any():
                raise DataError(
                    f"features file {where}: target {spec.target!r} must be 0 or 1 but "
                    f"{int(bad.sum())} row(s) hold e.g. {target[bad].head(3).tolist()}"
                )
            if table[spec.id_column].null_count:
                raise DataError(
                    f"features file {where}: id column {spec.id_column!r} has null values: "
                    "every row needs an id"
                )
            ts = _timestamps(table, spec.timestamp_column)[has]
            if (ts == np.iinfo(np.int64).min).any():
                raise DataError(
                    f"features file {where}: timestamp column {spec.timestamp_column!r} has "
                    "unparseable values"
                )
            if len(ts):
                self._ts_range = [
                    min(self._ts_range[0], ts.min()),
                    max(self._ts_range[1], ts.max()),
                ]
            labelled.append(np.packbits(has))
            self._labelled += int(has.sum())
        return labelled

    def _cuts(self, labelled: list[np.ndarray], firsts: list[int]) -> list[_Cut]:
        """Passes 2-3: the cut before the ``k``-th row in time order, for each ``k``."""
        n = self._labelled
        lo, hi = self._ts_range
        selectors = [KthSmallest(k, lo, hi, n) for k in firsts]
        while not all(s.done for s in selectors):
            for unit, bits in zip(self.source.units, labelled, strict=True):
                has = np.unpackbits(bits, count=unit.rows).astype(bool)
                ts = _timestamps(
                    self.source.read(unit, [self.spec.timestamp_column]), self.spec.timestamp_column
                )
                for s in selectors:
                    s.feed(ts[has])
            for s in selectors:
                s.end_pass()
        ties: list[list[pd.DataFrame]] = [[] for _ in selectors]
        for unit, bits in zip(self.source.units, labelled, strict=True):
            has = np.unpackbits(bits, count=unit.rows).astype(bool)
            table = self.source.read(unit, self.key_columns)
            ts = _timestamps(table, self.spec.timestamp_column)
            for found, s in zip(ties, selectors, strict=True):
                at = np.flatnonzero(has & (ts == s.value))
                if len(at):
                    found.append(table.take(at).select(self.key_columns[1:]).to_pandas())
        cuts = []
        for found, s in zip(ties, selectors, strict=True):
            group = pd.concat(found, ignore_index=True).sort_values(
                self.key_columns[1:], kind="stable"
            )
            tail = group.iloc[s.k - s.below :]
            assert s.value is not None
            cuts.append(_Cut(s.value, frozenset(tail.itertuples(index=False, name=None))))
        return cuts

    def _masks(self, labelled: list[np.ndarray], cuts: list[_Cut]) -> None:
        """Pass 4: each group's training and validation rows (as bits) and counts."""
        self._bits: list[tuple[np.ndarray, np.ndarray]] = []
        self.train_rows = np.zeros(len(self.source.units), np.int64)
        self.valid_rows = np.zeros(len(self.source.units), np.int64)
        self._positives = [0, 0]
        for i, (unit, bits) in enumerate(zip(self.source.units, labelled, strict=True)):
            has = np.unpackbits(bits, count=unit.rows).astype(bool)
            table = self.source.read(unit, [*self.key_columns, self.spec.target])
            ts = _timestamps(table, self.spec.timestamp_column)
            keys = table.select(self.key_columns[1:])
            kept = has & cuts[0].at_or_after(ts, keys)
            valid = kept & cuts[1].at_or_after(ts, keys)
            train = kept & ~valid
            target = table[self.spec.target].to_pandas().fillna(0).astype("int64").to_numpy()
            self._positives[0] += int(target[train].sum())
            self._positives[1] += int(target[valid].sum())
            self.train_rows[i], self.valid_rows[i] = train.sum(), valid.sum()
            self._bits.append((np.packbits(train), np.packbits(valid)))

    def mask(self, index: int, part: int) -> np.ndarray:
        """Group ``index``'s training (``part`` 0) or validation (1) rows."""
        unit = self.source.units[index]
        return np.unpackbits(self._bits[index][part], count=unit.rows).astype(bool)

    def rows_of(self, index: int, part: int, columns: list[str] | None = None) -> pd.DataFrame:
        """Group ``index``'s training or validation rows as a frame."""
        table = self.source.read(self.source.units[index], columns or self.model_columns)
        return table.filter(pa.array(self.mask(index, part))).to_pandas()

    def _fit(self, min_count: int, max_categories: int) -> Preprocessor:
        """Passes 5 and on: the preprocessor :meth:`Preprocessor.fit` gives the
        training rows, from per-group counts and exact medians."""
        spec = self.spec
        counts: dict[str, Counter[str]] = {c: Counter() for c in spec.categorical_features}
        moments = {c: _Moments() for c in spec.numeric_features}
        ranges = {
            c: [np.iinfo(np.int64).max, np.iinfo(np.int64).min] for c in spec.numeric_features
        }
        for i in np.flatnonzero(self.train_rows):
            table = self.source.read(self.source.units[i], spec.column_names)
            table = table.filter(pa.array(self.mask(int(i), 0)))
            spec.check_features(
                table.to_pandas(),
                f"training rows of {self.source.shown[self.source.units[i].file]}",
            )
            for name in spec.categorical_features:
                vc = pc.value_counts(table[name])
                names = categories_as_str(vc.field("values").to_pandas())
                for key, count in zip(names, vc.field("counts").to_pylist(), strict=True):
                    if key is not None:
                        counts[name][key] += count
            for name in spec.numeric_features:
                finite = self._finite(table, name)
                moments[name].add_values(finite)
                if len(finite):
                    keys = float_keys(finite)
                    ranges[name] = [
                        min(ranges[name][0], keys.min()),
                        max(ranges[name][1], keys.max()),
                    ]
        medians = self._medians({c: m.n for c, m in moments.items()}, ranges)
        vocab = {}
        for name, c in counts.items():
            ordered = sorted(
                ((k, v) for k, v in c.items() if v >= min_count), key=lambda kv: (-kv[1], kv[0])
            )
            vocab[name] = [k for k, _ in ordered[:max_categories]]
        n = self.train.rows
        median, mean, std, indicators, empty = {}, {}, {}, [], []
        for name in spec.numeric_features:
            m = moments[name]
            if m.n == 0:
                median[name], mean[name], std[name] = 0.0, 0.0, 1.0
                empty.append(name)
                continue
            med = medians[name]
            filled = _Moments()
            filled.add(m.n, m.mean, m.m2)
            filled.add(n - m.n, med, 0.0)  # the gaps, filled with the median
            median[name], mean[name] = med, filled.mean
            sd = math.sqrt(filled.m2 / n)
            std[name] = sd if sd > 0 else 1.0
            if m.n < n:
                indicators.append(name)
        return Preprocessor.of(spec, vocab, (median, mean, std), indicators, empty)

    @staticmethod
    def _finite(table: pa.Table, name: str) -> np.ndarray:
        values = as_double(table[name].to_pandas())
        if values is None:  # check_features refused text; this is a guard
            raise DataError(f"training data: numeric column {name!r} is not numeric")
        return values[np.isfinite(values)]

    def _medians(self, counts: dict[str, int], ranges: dict[str, list[int]]) -> dict[str, float]:
        """np.median of each column's finite training values: the middle one, or the
        mean of the middle two, selected exactly."""
        selectors: dict[str, list[KthSmallest]] = {}
        for name, n in counts.items():
            if n:
                lo, hi = ranges[name]
                ks = [(n - 1) // 2] if n % 2 else [n // 2 - 1, n // 2]
                selectors[name] = [KthSmallest(k, lo, hi, n) for k in ks]
        pending = [s for group in selectors.values() for s in group]
        while not all(s.done for s in pending):
            columns = [c for c, g in selectors.items() if not all(s.done for s in g)]
            for i in np.flatnonzero(self.train_rows):
                table = self.source.read(self.source.units[i], columns)
                table = table.filter(pa.array(self.mask(int(i), 0)))
                for name in columns:
                    keys = float_keys(self._finite(table, name))
                    for s in selectors[name]:
                        s.feed(keys)
            for s in pending:
                s.end_pass()
        return {
            name: float(np.mean(key_floats(np.array([s.value for s in group], np.int64))))
            for name, group in selectors.items()
        }

    # ---------------------------------------------------------------- reading

    def arrays(self, index: int, part: int) -> Arrays:
        """Group ``index``'s training or validation rows, preprocessed."""
        frame = self.rows_of(index, part)
        cats, nums = self.preprocessor.transform(
            frame, "training data" if part == 0 else "validation data"
        )
        return cats, nums, frame[self.spec.target].to_numpy(dtype=np.float32)

    def valid_chunks(self) -> Iterator[Arrays]:
        """The validation rows, a unit at a time (kept when they are few)."""
        if self._valid_cache is not None:
            yield from self._valid_cache
            return
        keep = self.valid.rows <= VALID_CACHE_ROWS
        chunks = []
        for i in np.flatnonzero(self.valid_rows):
            chunk = self.arrays(int(i), 1)
            if keep:
                chunks.append(chunk)
            yield chunk
        if keep:
            self._valid_cache = chunks

    @property
    def valid_frame(self) -> pd.DataFrame:
        """An evenly spaced sample of the raw validation rows (every k-th, in storage
        order; all of them up to :data:`VALID_SAMPLE_ROWS`), without the batch column."""
        stride = max(1, -(-self.valid.rows // VALID_SAMPLE_ROWS))
        seen, parts = 0, []
        columns = self.source.columns
        for i in np.flatnonzero(self.valid_rows):
            frame = self.rows_of(int(i), 1, columns)
            take = (seen + np.arange(len(frame))) % stride == 0
            seen += len(frame)
            parts.append(frame[take])
        frame = pd.concat(parts, ignore_index=True)
        frame[self.spec.timestamp_column] = pd.to_datetime(
            frame[self.spec.timestamp_column], errors="coerce"
        )
        return frame.drop(columns=[self.config.batch_column or ""], errors="ignore")

    def describe(self) -> dict[str, object]:
        return {
            "rows_train": self.train.rows,
            "rows_valid": self.valid.rows,
            "positive_rate_train": round(self.train.positives / self.train.rows, 4),
            "positive_rate_valid": round(self.valid.positives / self.valid.rows, 4),
            "first_valid_time": self.first_valid_time,
            "data_fingerprint": self.fingerprint[:16],
        }

    def train_stream(
        self, seed: int, rank: int, world_size: int, rows_per_step: int
    ) -> TrainStream:
        """Rank ``rank``'s training rows, step by step (:mod:`training.data.order`)."""
        return TrainStream(
            self.train_rows,
            lambda g: self.arrays(g, 0),
            shuffle_units=self.config.shuffle_units,
            seed=seed,
            rank=rank,
            world_size=world_size,
            rows_per_step=rows_per_step,
        )


def open_stream(
    config: DataConfig,
    spec: DatasetSpec,
    *,
    min_category_count: int = 5,
    max_categories: int = 1000,
    preprocessor: Preprocessor | None = None,
) -> StreamedData:
    """The streamed window of ``config`` (Parquet features that carry the target)."""
    assert config.features
    columns = list(
        dict.fromkeys(
            [
                *spec.column_names,
                spec.target,
                *([config.batch_column] if config.batch_column else []),
            ]
        )
    )
    source = ParquetSource(config.features, "features", columns)
    log.info(
        "streaming %d rows in %d units of %d file(s)",
        source.rows,
        len(source.units),
        len(source.files),
    )
    return StreamedData(
        source,
        spec,
        config,
        min_category_count=min_category_count,
        max_categories=max_categories,
        preprocessor=preprocessor,
    )
