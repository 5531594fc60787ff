"""Parquet files as a list of row groups, local or on S3, read one group at a time.

A source is a file, a local folder (its ``*.parquet`` files, sorted by name), an
``s3://bucket/prefix`` (every ``.parquet`` object under it, sorted by key) or a list
of them, in that order. It is opened with :mod:`pyarrow.dataset` and cut into its
units (:class:`Unit`): a row group, or a slice of one, of at most
:data:`UNIT_ROWS` rows, and small enough that a small source still has
:data:`MIN_UNITS` of them (so that every DDP rank gets its own). The streaming path
(:mod:`training.data.stream`) reads, shuffles and deals out whole units, so its
memory is bounded by the size of a row group, whatever the number of rows (the
pipeline writes groups of :data:`ROW_GROUP_ROWS` rows, one unit each).

S3 goes through pyarrow's own client, with ``AWS_ENDPOINT_URL_S3`` (or
``AWS_ENDPOINT_URL``, ``MLFLOW_S3_ENDPOINT_URL``) as its endpoint when set, as the
rest of the job's S3 reads do.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from training.data.spec import DataError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MIN_UNITS", "ROW_GROUP_ROWS", "UNIT_ROWS", "ParquetSource", "Unit"]

ROW_GROUP_ROWS = 16_384  # what the pipeline writes: 16 Ki rows, about 1 MiB per group
UNIT_ROWS = ROW_GROUP_ROWS  # a larger row group is read in slices of at most this
MIN_UNITS = 64  # a small source is sliced finer, down to rows / 64 a unit


@dataclass(frozen=True)
class Unit:
    """Rows ``start`` to ``start + rows`` of the ``group``-th row group of file ``file``
    (an index into the files)."""

    file: int
    group: int
    start: int
    rows: int


def _s3() -> pafs.S3FileSystem:
    endpoint = (
        os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or os.environ.get("MLFLOW_S3_ENDPOINT_URL")  # what the job's boto3 reads honour too
    )
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    if not endpoint:
        return pafs.S3FileSystem(region=region)
    scheme, _, rest = endpoint.partition("://")
    return pafs.S3FileSystem(
        endpoint_override=rest or scheme, scheme=scheme if rest else "https", region=region
    )


def _expand(location: str, what: str, s3: pafs.FileSystem | None) -> list[str]:
    """The Parquet files of one location (paths as the filesystem names them)."""
    if location.startswith("s3://"):
        assert s3 is not None
        path = location[len("s3://") :]
        try:
            info = s3.get_file_info(path)
            if info.type == pafs.FileType.File:
                return [path]
            found = s3.get_file_info(pafs.FileSelector(path.rstrip("/"), recursive=True))
        except OSError as exc:
            raise DataError(f"{what}: cannot list {location}: {exc}") from None
        files = sorted(f.path for f in found if f.is_file and f.path.endswith(".parquet"))
        if not files:
            raise DataError(f"{what}: no .parquet object under {location}")
        return files
    if location.startswith("file://"):
        from urllib.parse import unquote, urlparse

        location = unquote(urlparse(location).path)
    if os.path.isdir(location):
        files = sorted(
            os.path.join(location, n)
            for n in os.listdir(location)
            if n.endswith(".parquet") and os.path.isfile(os.path.join(location, n))
        )
        if not files:
            raise DataError(f"{what} folder {location} holds no .parquet file")
        return files
    if not os.path.exists(location):
        raise DataError(f"{what} file {location} does not exist")
    return [location]


class ParquetSource:
    """The row groups of a list of Parquet files, each readable on its own."""

    def __init__(self, locations: str | Sequence[str], what: str, columns: list[str]) -> None:
        items = [locations] if isinstance(locations, str) else list(locations)
        if not items:
            raise DataError(f"{what}: the list of files is empty")
        remote = [i.startswith("s3://") for i in items]
        if any(remote) and not all(remote):
            raise DataError(f"{what}: give local files or s3:// objects, not both")
        self.filesystem: pafs.FileSystem = _s3() if all(remote) else pafs.LocalFileSystem()
        s3 = self.filesystem if all(remote) else None
        self.files = [f for item in items for f in _expand(item, what, s3)]
        self.what, self.columns = what, columns
        self.shown = [f"s3://{f}" if s3 else f for f in self.files]
        self._groups: list[list[ds.ParquetFileFragment]] = []
        self.units: list[Unit] = []
        fmt = ds.ParquetFileFormat()
        for path, shown in zip(self.files, self.shown, strict=True):
            try:
                fragment = fmt.make_fragment(path, filesystem=self.filesystem)
                schema = fragment.physical_schema
                groups = fragment.split_by_row_group()
            except (OSError, pa.ArrowInvalid) as exc:
                hint = " (the streaming job reads Parquet; a CSV needs data.streaming: off)"
                raise DataError(
                    f"{what} file {shown} is not readable Parquet: {exc}{hint}"
                ) from None
            missing = [c for c in columns if c not in schema.names]
            if missing:
                raise DataError(f"{what} file {shown} lacks column(s) {missing}")
            self._groups.append(groups)
        sizes = [[g.row_groups[0].num_rows for g in groups] for groups in self._groups]
        total = sum(map(sum, sizes))
        if not total:
            raise DataError(f"{what}: {', '.join(self.shown[:3])} hold no rows")
        most = min(UNIT_ROWS, -(-total // MIN_UNITS))
        for i, groups in enumerate(sizes):
            for g, n in enumerate(groups):
                parts = -(-n // most)
                bounds = [n * k // parts for k in range(parts + 1)]
                self.units += [Unit(i, g, a, b - a) for a, b in itertools.pairwise(bounds) if b > a]
        self._cached: tuple[tuple[object, ...], pa.Table] | None = None

    @property
    def rows(self) -> int:
        return sum(u.rows for u in self.units)

    def read(self, unit: Unit, columns: list[str] | None = None) -> pa.Table:
        """One unit, its ``columns`` (default: the source's), dictionaries decoded. The
        last row group read is kept: the units of one group are read in a row."""
        columns = columns or self.columns
        key = (unit.file, unit.group, *columns)
        if self._cached is None or self._cached[0] != key:
            self._cached = None  # the old group goes before the new one comes
            fragment = self._groups[unit.file][unit.group]
            try:
                table = fragment.to_table(columns=columns)
            except (OSError, pa.ArrowInvalid) as exc:
                raise DataError(f"{self.what} file {self.shown[unit.file]}: {exc}") from None
            self._cached = (key, table.combine_chunks().cast(_decoded(table.schema)))
        return self._cached[1].slice(unit.start, unit.rows)

    def fingerprint(self) -> hashlib._Hash:
        """A digest of every file's Parquet metadata: names, sizes and, for each row
        group, its rows and each read column chunk's size and statistics. Cheap (no
        value is read); a changed value changes a compressed size or a statistic."""
        digest = hashlib.sha256()
        for path, groups in zip(self.files, self._groups, strict=True):
            digest.update(os.path.basename(path).encode())
            for group in groups:
                meta = group.metadata.row_group(group.row_groups[0].id)
                digest.update(str(meta.num_rows).encode())
                for c in range(meta.num_columns):
                    col = meta.column(c)
                    if col.path_in_schema not in self.columns:
                        continue
                    stats = col.statistics
                    shown = (
                        (stats.min, stats.max, stats.null_count)
                        if stats and stats.has_min_max
                        else None
                    )
                    digest.update(
                        repr((col.path_in_schema, col.total_compressed_size, shown)).encode()
                    )
        return digest


def _decoded(schema: pa.Schema) -> pa.Schema:
    """The schema with dictionary columns as their values (pandas writes categoricals so)."""
    return pa.schema(
        [f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema]
    )
