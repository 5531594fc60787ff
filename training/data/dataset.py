"""From configured sources to in-memory arrays: join, split, preprocess.

Features and labels are read separately (labels arrive later in production)
and inner-joined on the spec's id column, or on (batch, id) when the data names
each row's batch (``data.batch_column``: the pipeline's windows); rows without a
label are not yet trainable and are left out. The split is chronological: the
latest ``valid_fraction`` of rows (by the spec's timestamp) is the validation set,
so an entity that recurs across batches trains on its earlier rows and is judged
on its later ones, as the model will meet it in production.

Features may carry their label instead (``data.labels`` unset: the pipeline's window,
one labelled file per batch); such Parquet files are streamed in bounded memory
(:func:`open_for`, :mod:`training.data.stream`) unless ``data.streaming`` is ``off``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training.config.train import DataConfig, TrainConfig
from training.data import flights
from training.data.preprocess import Preprocessor
from training.data.spec import DataError, DatasetSpec
from training.data.stream import StreamedData, open_stream

log = logging.getLogger(__name__)

PARQUET_MAGIC = b"PAR1"


def read_table(location: str, what: str) -> pd.DataFrame:
    """A CSV or Parquet file from a path or ``s3://bucket/key`` (format sniffed)."""
    if location.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return _read_local(Path(unquote(urlparse(location).path)), what, location)
    if location.startswith("s3://"):
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "download"
            _download_s3(location, local, what)
            return _read_local(local, what, location)
    return _read_local(Path(location), what, location)


def _download_s3(uri: str, dest: Path, what: str) -> None:
    import boto3  # only the S3 path needs it
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = uri[len("s3://") :].partition("/")
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    client = boto3.client("s3", endpoint_url=endpoint)
    try:
        client.download_file(bucket, key, str(dest))
    except (BotoCoreError, ClientError) as exc:
        raise DataError(f"{what}: cannot download {uri}: {exc}") from None


TABLE_SUFFIXES = (".csv", ".parquet")


def read_tables(locations: str | list[str], what: str) -> pd.DataFrame:
    """One frame from a file, a local folder (its ``*.csv`` and ``*.parquet`` files,
    sorted by name) or a list of files and folders, concatenated in that order.

    Every file must have the same columns; a mistake is a :class:`DataError` that
    names the file (never a traceback)."""
    items = [locations] if isinstance(locations, str) else list(locations)
    if not items:
        raise DataError(f"{what}: the list of files is empty")
    files = [f for item in items for f in _expand(item, what)]
    frames = [(f, read_table(f, what)) for f in files]
    first_file, first = frames[0]
    for name, frame in frames[1:]:
        missing = [c for c in first.columns if c not in frame.columns]
        extra = [c for c in frame.columns if c not in first.columns]
        if missing or extra:
            raise DataError(
                f"{what} file {name} does not have the columns of {first_file}: "
                f"missing {missing}, extra {extra}"
            )
    if len(frames) == 1:
        return first
    log.info("%s: %d files concatenated", what, len(frames))
    return pd.concat([f for _, f in frames], ignore_index=True)


def _expand(location: str, what: str) -> list[str]:
    if location.startswith(("s3://", "file://")):
        return [location]
    path = Path(location)
    if not path.is_dir():
        return [location]
    files = sorted(
        str(p) for p in path.iterdir() if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES
    )
    if not files:
        raise DataError(f"{what} folder {location} holds no .csv or .parquet file")
    return files


def _read_local(path: Path, what: str, shown: str) -> pd.DataFrame:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise DataError(f"{what} file {shown} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"{what} {shown} is a folder: give a file, or a local folder") from None
    except OSError as exc:
        raise DataError(f"{what} file {shown} cannot be read: {exc.strerror or exc}") from None
    if not head:
        raise DataError(f"{what} file {shown} is empty")
    try:
        if head == PARQUET_MAGIC:
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except MemoryError as exc:  # pyarrow's ArrowMemoryError too: the file is fine, memory is not
        size = path.stat().st_size / 2**20
        raise DataError(
            f"{what} file {shown} ({size:,.0f} MiB on disk) does not fit in this process's "
            f"memory ({type(exc).__name__}: {exc}): the training job reads its whole window "
            "into memory (measured in docs/benchmarks.md, 'The pandas path against the batch "
            "size'); give the job more memory or train a shorter window "
            "(retrain.window_batches)"
        ) from None
    except Exception as exc:  # pyarrow and the CSV parser raise many kinds
        kind = "Parquet" if head == PARQUET_MAGIC else "CSV"
        raise DataError(f"{what} file {shown} is not readable {kind}: {exc}") from None


def load_frames(config: DataConfig) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Features and labels; no labels when the features carry the target (``data.labels``
    unset: the pipeline's window, one file per batch)."""
    if config.source == "flights":
        return flights.load_months(config.months)
    assert config.features
    features = read_tables(config.features, "features")
    return features, read_tables(config.labels, "labels") if config.labels else None


@dataclass(frozen=True)
class Split:
    cats: np.ndarray
    nums: np.ndarray
    y: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class PreparedData:
    train: Split
    valid: Split
    preprocessor: Preprocessor
    fingerprint: str
    valid_frame: pd.DataFrame  # raw validation rows (features + target), for slices
    first_valid_time: str

    def describe(self) -> dict[str, object]:
        return {
            "rows_train": len(self.train),
            "rows_valid": len(self.valid),
            "positive_rate_train": round(float(self.train.y.mean()), 4),
            "positive_rate_valid": round(float(self.valid.y.mean()), 4),
            "first_valid_time": self.first_valid_time,
            "data_fingerprint": self.fingerprint[:16],
        }


def join_labels(
    features: pd.DataFrame,
    labels: pd.DataFrame,
    spec: DatasetSpec,
    batch_column: str | None = None,
) -> pd.DataFrame:
    """Features with their label, inner-joined on the row key: the id, or (batch, id)
    with ``batch_column`` (a window of batches whose ids may recur, ``id_scope: batch``)."""
    keys = [spec.id_column] if batch_column is None else [batch_column, spec.id_column]
    for frame, what, needed in (
        *((features, "features", k) for k in keys),
        *((labels, "labels", k) for k in keys),
        (labels, "labels", spec.target),
    ):
        if needed not in frame.columns:
            raise DataError(f"{what} lack column {needed!r} (dataset spec {spec.name!r})")
    spec.check_ids(features, "features", batch_column)
    spec.check_ids(labels, "labels", batch_column)
    spec.check_labels(labels, "labels")
    joined = features.merge(labels[[*keys, spec.target]], on=keys, how="inner")
    unlabelled = len(features) - len(joined)
    if unlabelled:
        log.info("%d feature rows have no label yet and are left out", unlabelled)
    return joined


def prepare(
    config: DataConfig,
    spec: DatasetSpec,
    *,
    min_category_count: int = 5,
    max_categories: int = 1000,
    preprocessor: Preprocessor | None = None,
) -> PreparedData:
    features, labels = load_frames(config)
    spec.check_features(features, "features")
    if labels is None:  # labelled features: a row with a null target has no label yet
        if spec.target not in features.columns:
            raise DataError(
                f"features lack the target column {spec.target!r}: give data.labels, or "
                "features that carry their label"
            )
        labels = features.loc[features[spec.target].notna(), [spec.id_column, spec.target]]
        labels = labels.assign(
            **({config.batch_column: features[config.batch_column]} if config.batch_column else {})
        )
        features = features.drop(columns=[spec.target])
    frame = join_labels(features, labels, spec, config.batch_column)
    if len(frame) == 0:
        raise DataError("no feature row has a label: nothing to train on")
    frame[spec.timestamp_column] = pd.to_datetime(frame[spec.timestamp_column], errors="coerce")
    if frame[spec.timestamp_column].isna().any():
        raise DataError(f"timestamp column {spec.timestamp_column!r} has unparseable values")
    # time-ordered: an entity seen in several batches (id_scope: batch) has its earlier rows
    # in training and its latest ones held out, as production scores known entities later
    order = [spec.timestamp_column, *([config.batch_column] if config.batch_column else [])]
    frame = frame.sort_values([*order, spec.id_column], kind="stable").reset_index(drop=True)
    if config.max_rows is not None and len(frame) > config.max_rows:
        frame = frame.iloc[-config.max_rows :].reset_index(drop=True)
    n_valid = max(1, round(len(frame) * config.valid_fraction))
    if len(frame) - n_valid < 2:
        raise DataError(
            f"only {len(frame)} labelled rows: too few to split into train and validation"
        )
    train_frame, valid_frame = frame.iloc[:-n_valid], frame.iloc[-n_valid:].reset_index(drop=True)
    spec.check_target(train_frame[spec.target], "training data")
    spec.check_target(valid_frame[spec.target], "validation data")
    if preprocessor is None:
        preprocessor = Preprocessor.fit(
            train_frame, spec, min_count=min_category_count, max_categories=max_categories
        )

    def split(part: pd.DataFrame, what: str) -> Split:
        cats, nums = preprocessor.transform(part, what)
        return Split(
            cats,
            nums,
            part[spec.target].to_numpy(dtype=np.float32),
            part[spec.id_column].to_numpy(),
        )

    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    digest.update(str(n_valid).encode())
    return PreparedData(
        train=split(train_frame, "training data"),
        valid=split(valid_frame, "validation data"),
        preprocessor=preprocessor,
        fingerprint=digest.hexdigest(),
        valid_frame=valid_frame.drop(columns=[config.batch_column or ""], errors="ignore"),
        first_valid_time=str(valid_frame[spec.timestamp_column].iloc[0]),
    )


def prepare_for(
    config: TrainConfig,
    spec: DatasetSpec,
    *,
    data: DataConfig | None = None,
    preprocessor: Preprocessor | None = None,
) -> PreparedData:
    """The data of a training config (its ``data`` section, or ``data``), prepared as
    the job prepares it (the config's category limits, or a fitted ``preprocessor``)."""
    return prepare(
        data or config.data,
        spec,
        min_category_count=config.model.min_category_count,
        max_categories=config.model.max_categories,
        preprocessor=preprocessor,
    )


def should_stream(config: DataConfig) -> bool:
    """Whether the job streams ``config``'s rows (``data.streaming``; ``auto``: Parquet
    features that carry their labels, ``data.labels`` unset)."""
    if config.streaming == "auto":
        return config.source == "files" and not config.labels
    return config.streaming == "on"


def open_for(
    config: TrainConfig,
    spec: DatasetSpec,
    *,
    preprocessor: Preprocessor | None = None,
) -> PreparedData | StreamedData:
    """The training job's data: streamed in bounded memory (:mod:`training.data.stream`)
    when :func:`should_stream`, else read whole (:func:`prepare_for`)."""
    if not should_stream(config.data):
        return prepare_for(config, spec, preprocessor=preprocessor)
    return open_stream(
        config.data,
        spec,
        min_category_count=config.model.min_category_count,
        max_categories=config.model.max_categories,
        preprocessor=preprocessor,
    )


class WindowIds:
    """The ids of a window's batches, checked across batches when the spec's ``id_scope``
    is ``global`` (within a batch :func:`join_labels` checks them): a batch at a time, 8
    bytes a row (the ids' hashes); the files are read again, their ids only, when two
    hashes agree, and the error is :meth:`DatasetSpec.check_ids`'s."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self._hashes: list[np.ndarray] = []

    def add(self, frame: pd.DataFrame) -> None:
        if self.spec.id_scope == "global":
            self._hashes.append(self._hash(frame[self.spec.id_column]))

    @staticmethod
    def _hash(ids: pd.Series) -> np.ndarray:
        return pd.util.hash_pandas_object(ids, index=False).to_numpy()

    def check(self, files: list[Path], batch_column: str) -> None:
        if not self._hashes:
            return
        ordered = np.sort(np.concatenate(self._hashes))
        twice = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
        if not len(twice):
            return
        parts = []
        for path in files:
            ids = pd.read_parquet(path, columns=[batch_column, self.spec.id_column])
            parts.append(ids[np.isin(self._hash(ids[self.spec.id_column]), twice)])
        self.spec.check_ids(pd.concat(parts, ignore_index=True), "the window", batch_column)
