"""Landing batches, listing them, and reference snapshots: the data side of the flow."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.base.config import resolve_path
from pipeline.base.layout import (
    AREAS,
    BatchRef,
    batch_ids,
    batch_prefix,
    committed_versions,
    read_manifest,
    resolve_batch,
)
from pipeline.base.ledger import (
    LABELS_RECEIVED,
    LANDED,
    BatchState,
    ledger_key,
    missing_steps,
    read_ledger,
    record_step,
)
from pipeline.flow.env import Env
from pipeline.steps.landing import ingest
from pipeline.steps.landing import labels as label_steps
from pipeline.steps.landing.ingest import Landed
from pipeline.steps.quality.reference import ReferenceSnapshot, create_reference_from_batches

__all__ = [
    "BatchListing",
    "batches",
    "check_source",
    "land",
    "reference",
    "source_roots",
]


def land(
    env: Env,
    source: str,
    *,
    labels: bool = False,
    batch_id: str | None = None,
    new_version: bool = False,
    trusted: bool = False,
) -> Landed:
    """Land a batch: a bundled flights month (``2013-03``) or a file with ``batch_id``;
    the ledger records it (``landed`` or ``labels_received``).

    ``trusted`` (a person at a shell): the file may lie outside
    ``ingest.source_roots``; a DAG run's ``source`` param is never trusted.
    """
    month = ingest.parse_month(source) if not Path(source).exists() else None
    if month is not None:
        if batch_id is not None:
            raise ValueError(
                f"{source!r} is a flights month (batch 2013-{month:02d}); batch_id is for files"
            )
        land_month = label_steps.ingest_flights_labels if labels else ingest.ingest_flights_month
        landed = land_month(env.store, env.spec, month, new_version=new_version)
    else:
        if not batch_id:
            raise ValueError(
                f"{source!r} is not a flights month: landing a file needs a batch id "
                "(e.g. 2024-03): every later step is keyed by it"
            )
        if not trusted:
            check_source(env, source)
        land_file = label_steps.ingest_labels_file if labels else ingest.ingest_file
        landed = land_file(
            env.store,
            env.spec,
            source,
            batch_id,
            new_version=new_version,
            storage=env.config.storage,
        )
    step = LABELS_RECEIVED if labels else LANDED
    # the same content again keeps the first entry (and its time), unless it was never written
    if landed.status == "landed" or not env.store.exists(
        ledger_key(env.dataset, landed.batch_id, step)
    ):
        detail = f"{landed.rows} rows"
        record_step(
            env.store, env.dataset, landed.batch_id, step, version=landed.version, detail=detail
        )
    return landed


def source_roots(env: Env) -> list[str]:
    """``ingest.source_roots``, or ``<home>/incoming`` when none is configured."""
    roots = list(env.config.ingest.source_roots)
    return roots or [str(resolve_path(env.config.home) / "incoming")]


def check_source(env: Env, source: str) -> None:
    """Refuse a file outside the configured roots (symlinks and ``..`` resolved first):
    the DAG's ``source`` param must not read whatever the worker can read."""
    roots = source_roots(env)
    if "://" in source:
        scheme = source.split("://", 1)[0]
        allowed = [r.rstrip("/") + "/" for r in roots if r.startswith(f"{scheme}://")]
        ok = ".." not in source.split("/") and any(source.startswith(r) for r in allowed)
    else:
        real = Path(source).resolve()
        ok = any(real.is_relative_to(Path(r).resolve()) for r in roots if "://" not in r)
    if not ok:
        raise PermissionError(
            f"{source!r} is outside ingest.source_roots {roots}: put the file there or add "
            "its folder or s3:// prefix to ingest.source_roots"
        )


@dataclass(frozen=True)
class BatchListing:
    batch_id: str
    versions: list[int]
    quarantined: list[int]
    labels: list[int]
    released: dict[int, int]  # quarantined version -> the version it was released as
    ledger: str = "nothing recorded"  # the steps recorded, in order, with their versions
    missing: list[str] = field(default_factory=list)  # monitor steps not done for the newest


def _released(env: Env, batch_id: str, versions: list[int]) -> dict[int, int]:
    out = {}
    for v in versions:
        origin = read_manifest(env.store, batch_prefix(BatchRef(env.dataset, batch_id, v)))
        if isinstance(origin.get("released_from"), dict):
            out[int(origin["released_from"]["version"])] = v
    return out


def batches(env: Env) -> list[BatchListing]:
    """Every batch id in the store with its versions, quarantined versions (and those
    released by ``revalidate``), labels, and its ledger: the steps recorded and the drift
    monitor's steps still missing for its newest version."""
    ids = sorted({b for area in AREAS for b in batch_ids(env.store, env.dataset, area)})
    ledger: dict[str, BatchState] = read_ledger(env.store, env.dataset)
    out = []
    for b in ids:
        versions = committed_versions(env.store, env.dataset, b)
        quarantined = committed_versions(env.store, env.dataset, b, "quarantine")
        released = _released(env, b, versions) if quarantined else {}
        labels = committed_versions(env.store, env.dataset, b, "labels")
        state = ledger.get(b)
        missing = missing_steps(state, versions[-1]) if versions else []
        line = state.line() if state is not None else "nothing recorded"
        out.append(BatchListing(b, versions, quarantined, labels, released, line, missing))
    return out


def reference(
    env: Env, snapshot: str, from_batches: list[str]
) -> tuple[ReferenceSnapshot, list[BatchRef]]:
    """Store a reference snapshot from the newest version of each named batch; the
    snapshot and the batch versions it was made from."""
    refs = [resolve_batch(env.store, env.dataset, b) for b in from_batches]
    snap = create_reference_from_batches(
        env.store,
        env.spec,
        refs,
        snapshot,
        rows=env.config.drift.reference_rows,
        seed=env.config.drift.sample_seed,
    )
    return snap, refs
