"""Reference snapshots: the sample of data a champion was trained on.

Drift is measured against a reference snapshot, and validation uses its
categories for the ``max_unseen_share`` checks. A snapshot is immutable and
named explicitly (e.g. the registered model version it belongs to, or
``2013-01``); it is stored with its manifest (rows, source, the categories of
every categorical column)::

    datasets/<dataset>/references/<snapshot>/reference.parquet
    datasets/<dataset>/references/<snapshot>/manifest.json

Large inputs are sampled deterministically by a hash of the id column
(:func:`sample_rows`): the same rows are kept whatever their order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from pipeline.base.layout import REFERENCE, BatchRef, manifest_key, reference_prefix
from pipeline.base.store import (
    ObjectExists,
    ObjectNotFound,
    ObjectStore,
    check_id,
    frame_to_parquet,
    get_frame,
    get_json,
    join_key,
    put_json,
)
from training.api import DataError, DatasetSpec, categories_as_str

__all__ = [
    "ReferenceNotFound",
    "ReferenceSnapshot",
    "create_reference",
    "create_reference_from_batches",
    "read_reference",
    "reference_categories",
    "reference_manifest",
    "sample_rows",
]

log = logging.getLogger(__name__)


class ReferenceNotFound(DataError):
    """No reference snapshot of that name; the message says how to create one."""


@dataclass(frozen=True)
class ReferenceSnapshot:
    dataset: str
    snapshot_id: str
    rows: int
    source_rows: int
    sampled: bool
    uri: str
    status: str  # "created" or "unchanged"


def sample_rows(
    frame: pd.DataFrame, n: int, id_column: str | None, seed: int = 0
) -> tuple[pd.DataFrame, bool]:
    """At most ``n`` rows, chosen by the smallest hashes of the id column (salted by ``seed``).

    Deterministic and independent of row order; rows keep their original
    order. Without an id column the whole row is hashed.
    """
    if len(frame) <= n:
        return frame, False
    key = f"{seed:016d}"[-16:]
    if id_column is not None and id_column in frame.columns:
        hashes = pd.util.hash_pandas_object(frame[id_column], index=False, hash_key=key)
    else:
        hashes = pd.util.hash_pandas_object(frame, index=False, hash_key=key)
    values = hashes.to_numpy()
    keep = np.sort(np.argpartition(values, n - 1)[:n])
    return frame.iloc[keep].reset_index(drop=True), True


def _categories(frame: pd.DataFrame, spec: DatasetSpec) -> dict[str, list[str]]:
    out = {}
    for name in spec.categorical_features:
        if name in frame.columns:
            values = categories_as_str(frame[name]).dropna().unique()
            out[name] = sorted(str(v) for v in values)
    return out


def create_reference(
    store: ObjectStore,
    spec: DatasetSpec,
    frame: pd.DataFrame,
    snapshot_id: str,
    *,
    rows: int = 100_000,
    seed: int = 0,
    source: Any = "dataframe",
) -> ReferenceSnapshot:
    """Store ``frame`` (sampled to ``rows``) as reference snapshot ``snapshot_id``.

    Snapshots are immutable: the same content again is a no-op; different
    content under an existing name is refused.
    """
    from pipeline.steps.landing.sources import frame_fingerprint

    dataset = check_id(spec.name, "dataset name")
    check_id(snapshot_id, "reference snapshot id")
    missing = [c for c in spec.feature_columns if c not in frame.columns]
    if missing:
        raise DataError(f"reference {snapshot_id}: the frame lacks feature column(s) {missing}")
    keep = [c for c in spec.column_names if c in frame.columns]
    sample, sampled = sample_rows(frame[keep], rows, spec.id_column, seed)
    digest = frame_fingerprint(sample)
    prefix = reference_prefix(dataset, snapshot_id)
    if store.exists(manifest_key(prefix)):
        existing = get_json(store, manifest_key(prefix))
        if existing.get("content_sha256") != digest:
            raise ObjectExists(
                f"reference snapshot {dataset}/{snapshot_id} already exists with other content; "
                "snapshots are immutable: choose a new snapshot id"
            )
        return ReferenceSnapshot(
            dataset,
            snapshot_id,
            int(existing["rows"]),
            int(existing["source_rows"]),
            bool(existing["sampled"]),
            store.uri(join_key(prefix, REFERENCE)),
            "unchanged",
        )
    store.put_bytes(join_key(prefix, REFERENCE), frame_to_parquet(sample), overwrite=True)
    put_json(
        store,
        manifest_key(prefix),
        {
            "dataset": dataset,
            "snapshot_id": snapshot_id,
            "rows": len(sample),
            "source_rows": len(frame),
            "sampled": sampled,
            "sample_seed": seed,
            "source": source,
            "columns": keep,
            "categories": _categories(sample, spec),
            "content_sha256": digest,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    log.info("reference snapshot %s/%s: %d rows", dataset, snapshot_id, len(sample))
    return ReferenceSnapshot(
        dataset,
        snapshot_id,
        len(sample),
        len(frame),
        sampled,
        store.uri(join_key(prefix, REFERENCE)),
        "created",
    )


def create_reference_from_batches(
    store: ObjectStore,
    spec: DatasetSpec,
    refs: list[BatchRef],
    snapshot_id: str,
    *,
    rows: int = 100_000,
    seed: int = 0,
) -> ReferenceSnapshot:
    """A reference snapshot from stored (validated) batch versions, e.g. the training window."""
    from pipeline.base.layout import read_batch

    if not refs:
        raise DataError("a reference snapshot needs at least one batch")
    frame = pd.concat([read_batch(store, r) for r in refs], ignore_index=True)
    return create_reference(
        store,
        spec,
        frame,
        snapshot_id,
        rows=rows,
        seed=seed,
        source=[str(r) for r in refs],
    )


def reference_manifest(store: ObjectStore, dataset: str, snapshot_id: str) -> dict[str, Any]:
    try:
        return get_json(store, manifest_key(reference_prefix(dataset, snapshot_id)))
    except ObjectNotFound:
        raise ReferenceNotFound(
            f"reference snapshot {dataset}/{snapshot_id} does not exist in {store.description}; "
            "create it first (python -m pipeline reference SNAPSHOT --batches ...)"
        ) from None


def read_reference(store: ObjectStore, dataset: str, snapshot_id: str) -> pd.DataFrame:
    reference_manifest(store, dataset, snapshot_id)  # a clear error when it is missing
    return get_frame(store, join_key(reference_prefix(dataset, snapshot_id), REFERENCE))


def reference_categories(
    store: ObjectStore, dataset: str, snapshot_id: str
) -> dict[str, list[str]]:
    return dict(reference_manifest(store, dataset, snapshot_id).get("categories", {}))
