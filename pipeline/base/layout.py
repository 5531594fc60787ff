"""The key layout of the object store (documented in docs/data.md).

Every key is partitioned explicitly by dataset and batch id (``2013-03``),
and every stored batch by version, so a step re-run for the same partition
finds exactly what it wrote before and never "the latest" of something::

    datasets/<dataset>/batches/<batch>/v<N>/features.parquet     a landed feature batch
    datasets/<dataset>/batches/<batch>/v<N>/manifest.json        written last: v<N> exists iff so
    datasets/<dataset>/labels/<batch>/v<N>/labels.parquet        labels that arrived for <batch>
    datasets/<dataset>/labels/<batch>/v<N>/manifest.json
    datasets/<dataset>/quarantine/<batch>/v<N>/...               a refused version, as it came in,
    datasets/<dataset>/quarantine/<batch>/v<N>/validation.json   with the reason beside it
    datasets/<dataset>/references/<snapshot>/reference.parquet   a reference sample (the champion's)
    datasets/<dataset>/references/<snapshot>/manifest.json       with its categories per column
    reports/<dataset>/<batch>/v<N>/validation/<suite>/summary.json   one per suite fingerprint
    reports/<dataset>/<batch>/v<N>/validation/<suite>/data_docs/index.html
    reports/<dataset>/<batch>/v<N>/drift/<snapshot>-<settings>/summary.json
    reports/<dataset>/<batch>/v<N>/drift/<snapshot>-<settings>/report.html
    predictions/<dataset>/<batch>/<model_version>/predictions.parquet
    ledger/<dataset>/<batch>/<step>.json                         the batch's ledger (base/ledger.py)
    landing/<kind>/<batch>.<parquet|csv>                         the landing zone: a file waiting
    landing/<outcome>/<kind>/<batch>.<ext>[.json]                landed or refused (with why)
    alerts/<kind>/<run_key>/alert.json                           one alert, create-if-absent (dedup)
    alerts/<kind>/<run_key>/<channel>/round-NNNN[.result].json   a delivery round and its outcome

Version numbers count up per batch over ``batches/`` and ``quarantine/``
together, so a quarantined v1 and its corrected v2 never share a key.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.base.store import (
    InvalidKey,
    ObjectStore,
    StorageError,
    check_id,
    get_frame,
    get_json,
    join_key,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "AREAS",
    "LANDING_KINDS",
    "BatchNotFound",
    "BatchRef",
    "batch_ids",
    "batch_prefix",
    "committed_versions",
    "drift_prefix",
    "features_key",
    "labelled_batches",
    "labels_prefix",
    "landed_batches",
    "landing_files",
    "landing_outcome_key",
    "manifest_key",
    "merged_labels",
    "next_version",
    "predictions_key",
    "quarantine_prefix",
    "read_batch",
    "read_labels",
    "read_manifest",
    "reference_prefix",
    "resolve_batch",
    "validation_prefix",
]

log = logging.getLogger(__name__)

FEATURES = "features.parquet"
LABELS = "labels.parquet"
MANIFEST = "manifest.json"
REFERENCE = "reference.parquet"
VALIDATION = "validation.json"
_VERSION = re.compile(r"^v([1-9][0-9]*)$")
AREAS = ("batches", "labels", "quarantine")


class BatchNotFound(StorageError):
    """No stored batch (version) matches; the message says what exists instead."""


@dataclass(frozen=True, order=True)
class BatchRef:
    """One stored version of one batch: the partition every step is keyed by."""

    dataset: str
    batch_id: str
    version: int

    def __post_init__(self) -> None:
        check_id(self.dataset, "dataset name")
        check_id(self.batch_id, "batch id")
        if not isinstance(self.version, int) or self.version < 1:
            raise InvalidKey(f"batch version must be an integer >= 1, got {self.version!r}")

    def __str__(self) -> str:
        return f"{self.dataset}/{self.batch_id}/v{self.version}"

    def as_dict(self) -> dict[str, object]:
        return {"dataset": self.dataset, "batch_id": self.batch_id, "version": self.version}


def _area(dataset: str, area: str, batch_id: str) -> str:
    dataset, batch_id = check_id(dataset, "dataset name"), check_id(batch_id, "batch id")
    return join_key("datasets", dataset, area, batch_id)


def batch_prefix(ref: BatchRef) -> str:
    return join_key(_area(ref.dataset, "batches", ref.batch_id), f"v{ref.version}")


def features_key(ref: BatchRef) -> str:
    return join_key(batch_prefix(ref), FEATURES)


def manifest_key(prefix: str) -> str:
    return join_key(prefix, MANIFEST)


def labels_prefix(dataset: str, batch_id: str, version: int) -> str:
    return join_key(_area(dataset, "labels", batch_id), f"v{version}")


def quarantine_prefix(ref: BatchRef) -> str:
    return join_key(_area(ref.dataset, "quarantine", ref.batch_id), f"v{ref.version}")


def reference_prefix(dataset: str, snapshot_id: str) -> str:
    return join_key(
        "datasets",
        check_id(dataset, "dataset name"),
        "references",
        check_id(snapshot_id, "reference snapshot id"),
    )


def _report_prefix(ref: BatchRef) -> str:
    return join_key("reports", ref.dataset, ref.batch_id, f"v{ref.version}")


def validation_prefix(ref: BatchRef, suite_fingerprint: str) -> str:
    check_id(suite_fingerprint, "suite fingerprint")
    return join_key(_report_prefix(ref), "validation", suite_fingerprint)


def drift_prefix(ref: BatchRef, snapshot_id: str, settings_fingerprint: str) -> str:
    name = f"{check_id(snapshot_id, 'reference snapshot id')}-{settings_fingerprint}"
    return join_key(_report_prefix(ref), "drift", check_id(name, "drift report name"))


def report_summaries(store: ObjectStore, ref: BatchRef, kind: str) -> list[str]:
    """Keys of the ``summary.json`` of every ``kind`` (validation, drift) report of
    this batch version, oldest name first (the HTML report lies beside each)."""
    if kind not in ("validation", "drift"):
        raise ValueError(f"report kind must be validation or drift, got {kind!r}")
    prefix = join_key(_report_prefix(ref), kind)
    keys = store.list(prefix)
    return sorted(k for k in keys if k.startswith(prefix + "/") and k.endswith("/summary.json"))


def predictions_key(dataset: str, batch_id: str, model_version: str) -> str:
    return join_key(
        "predictions",
        check_id(dataset, "dataset name"),
        check_id(batch_id, "batch id"),
        check_id(model_version, "model version"),
        "predictions.parquet",
    )


def _versions(store: ObjectStore, dataset: str, area: str, batch_id: str) -> dict[int, bool]:
    """Version number -> committed (its manifest exists), for one batch in one area."""
    found: dict[int, bool] = {}
    prefix = _area(dataset, area, batch_id)
    for key in store.list(prefix):
        head, _, rest = key[len(prefix) + 1 :].partition("/")
        match = _VERSION.match(head)
        if match:
            number = int(match.group(1))
            found[number] = found.get(number, False) or rest == MANIFEST
    return found


def committed_versions(
    store: ObjectStore, dataset: str, batch_id: str, area: str = "batches"
) -> list[int]:
    """Versions of a batch whose manifest exists (a crashed write leaves none), ascending."""
    return sorted(v for v, done in _versions(store, dataset, area, batch_id).items() if done)


def next_version(store: ObjectStore, dataset: str, batch_id: str, areas: tuple[str, ...]) -> int:
    """One more than any version seen in ``areas``, committed or not (never reuse a key)."""
    seen = [v for area in areas for v in _versions(store, dataset, area, batch_id)]
    return max(seen, default=0) + 1


def resolve_batch(
    store: ObjectStore, dataset: str, batch_id: str, version: int | None = None
) -> BatchRef:
    """The stored batch version to act on: ``version`` if given, else the newest committed
    one (for people at a command line; tasks pass the BatchRef that ingestion returned)."""
    versions = committed_versions(store, dataset, batch_id)
    quarantined = committed_versions(store, dataset, batch_id, "quarantine")
    if version is not None:
        if version in versions:
            return BatchRef(dataset, batch_id, version)
        if version in quarantined:
            raise BatchNotFound(
                f"batch {dataset}/{batch_id} v{version} was quarantined "
                f"(see {quarantine_prefix(BatchRef(dataset, batch_id, version))}/{VALIDATION}); "
                f"if the spec was wrong, fix it and run python -m pipeline revalidate "
                f"{batch_id} --version {version}"
            )
        raise BatchNotFound(
            f"batch {dataset}/{batch_id} has no version {version}; stored: "
            f"{_names(versions) or 'none'}"
        )
    if not versions:
        if quarantined:
            raise BatchNotFound(
                f"batch {dataset}/{batch_id} has no valid version: {_names(quarantined)} "
                "quarantined; ingest a corrected file, or fix the spec and run "
                f"python -m pipeline revalidate {batch_id}"
            )
        raise BatchNotFound(f"batch {dataset}/{batch_id} was never ingested (run ingest first)")
    ref = BatchRef(dataset, batch_id, versions[-1])
    if len(versions) > 1:
        log.info("batch %s/%s has versions %s; using v%d", dataset, batch_id, versions, ref.version)
    return ref


def _names(versions: list[int]) -> str:
    return ", ".join(f"v{v}" for v in versions)


# ------------------------------------------------------------------------------ landing zone

LANDING = "landing"
LANDING_KINDS = ("features", "labels")


def landing_files(store: ObjectStore, kind: str) -> list[tuple[str, str]]:
    """``(file name, key)`` of every file waiting directly under ``landing/<kind>/``,
    in name order (a name starting with a dot is not listed: write a file under such a
    name and rename it into place, so that no sweep reads it half written)."""
    if kind not in LANDING_KINDS:
        raise ValueError(f"landing kind must be one of {LANDING_KINDS}, got {kind!r}")
    prefix = join_key(LANDING, kind)
    names = [(k[len(prefix) + 1 :], k) for k in store.list(prefix)]
    return sorted((n, k) for n, k in names if "/" not in n and not n.startswith("."))


def landing_outcome_key(kind: str, name: str, outcome: str) -> str:
    """Where a swept file goes: ``landing/landed/<kind>/<name>`` or ``landing/refused/...``."""
    if outcome not in ("landed", "refused"):
        raise ValueError(f"landing outcome must be landed or refused, got {outcome!r}")
    return join_key(LANDING, outcome, kind, name)


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


def merged_labels(
    store: ObjectStore, dataset: str, batch_id: str, id_column: str, upto: int | None = None
) -> pd.DataFrame:
    """Every label of a batch: its committed label versions (up to ``upto``) merged in
    order. A later delivery adds the rows the earlier ones lacked and replaces a row
    they already held (a correction, landed only with ``--new-version`` and recorded in
    its manifest: :func:`pipeline.steps.landing.labels.ingest_labels`)."""
    import pandas as pd

    versions = [
        v
        for v in committed_versions(store, dataset, batch_id, "labels")
        if upto is None or v <= upto
    ]
    if not versions:
        raise BatchNotFound(
            f"no labels for {dataset}/{batch_id} yet (ingest them first: ingest-labels)"
        )
    parts = [read_labels(store, dataset, batch_id, v) for v in versions]
    if len(parts) == 1:
        return parts[0]
    merged = pd.concat(parts, ignore_index=True)
    return merged.drop_duplicates(id_column, keep="last").reset_index(drop=True)


# ------------------------------------------------------------------------------ listing


def batch_ids(store: ObjectStore, dataset: str, area: str = "batches") -> list[str]:
    """Every batch id with a committed version in ``area`` (batches, labels or
    quarantine), in sort order (batch ids sort in time order)."""
    if area not in AREAS:
        raise ValueError(f"area must be one of {AREAS}, got {area!r}")
    prefix = join_key("datasets", check_id(dataset, "dataset name"), area)
    ids = sorted({k[len(prefix) + 1 :].split("/", 1)[0] for k in store.list(prefix)})
    return [b for b in ids if committed_versions(store, dataset, b, area)]


def landed_batches(store: ObjectStore, dataset: str) -> list[str]:
    """Batch ids whose features have landed (a committed, unquarantined version)."""
    return batch_ids(store, dataset, "batches")


def labelled_batches(store: ObjectStore, dataset: str) -> list[str]:
    """Batch ids whose labels have arrived."""
    return batch_ids(store, dataset, "labels")
