"""Input files: the bytes of a CSV or Parquet file (a path or ``s3://``), read safely.

A file that cannot be read as a table (empty, corrupt Parquet, not the format its
name claims, a CSV with a header and no rows, a Parquet footer that claims absurd
sizes) is refused with :class:`UnreadableSource` before anything large is
allocated; the message names the file and what to fix.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from training.api import DataError, DatasetSpec

if TYPE_CHECKING:
    from pipeline.base.sections import StorageConfig

__all__ = [
    "BatchExists",
    "IngestError",
    "Source",
    "UnreadableSource",
    "first_line",
    "frame_fingerprint",
    "load_source",
    "max_batch_rows",
    "normalise",
    "now_iso",
    "read_source",
    "short",
]

PARQUET_MAGIC = b"PAR1"
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
CSV_SUFFIXES = (".csv", ".txt")


class IngestError(DataError):
    """A batch could not be landed; the message names the file and what to fix."""


class BatchExists(IngestError):
    """The batch id already holds different content and no new version was asked for."""


class UnreadableSource(IngestError):
    """The bytes are not a readable table (the message says why)."""


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
    from pipeline.base.sections import StorageConfig
    from pipeline.base.store import S3Store

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
        raise IngestError(
            f"cannot read input {uri}: {s3.storage_error(exc, '', 'download')}"
        ) from None


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
            f"input file {name} is a corrupt Parquet file ({first_line(exc)})"
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
            f"input file {name} is named {short(suffix)}: only CSV ({', '.join(CSV_SUFFIXES)}) "
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
                f"input file {name} is a corrupt Parquet file ({first_line(exc)})"
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
        raise UnreadableSource(f"input file {name} is not valid CSV ({first_line(exc)})") from None
    return frame


def short(text: Any, limit: int = 80) -> str:
    """A value for a message: a 100,000-character column name is shown by its length."""
    text = str(text)
    return text if len(text) <= limit else f"{text[: limit - 24]}... ({len(text):,} chars)"


def first_line(exc: BaseException) -> str:
    """An exception as one line of a message (at most 300 characters)."""
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


def now_iso() -> str:
    """Now (UTC), to the second, as manifests and results record it."""
    return datetime.now(UTC).isoformat(timespec="seconds")
