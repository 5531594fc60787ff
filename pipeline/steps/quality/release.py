"""Releasing a quarantined batch: re-check it against the current spec, and land it.

A batch is refused when it fails the spec's suite; sometimes the spec was wrong
(a column declared never-null that is empty for months, a range too tight), not
the data. Once the spec is fixed, :func:`release_batch` re-validates the
quarantined version as it was stored and, when it passes, lands the same rows as
the batch's next version (``v<N+1>``, a new key, as every version is), so that
drift, retraining and ``ingest`` of the same content find a valid batch.

Nothing stored is lost or overwritten: the quarantined version stays where it is
with its original refusal; every re-check adds one record beside it
(``quarantine/<batch>/v<N>/revalidations/<when>-<spec>-<id>.json``: who, when, which
spec hash, the outcome); the released version's manifest says where it came from
(``released_from``: the version, its refusal, who, when, the spec hash).
Releasing again is a no-op that names the version released before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass, replace
from typing import Any, Literal

import pandas as pd

from pipeline.base.layout import (
    FEATURES,
    BatchNotFound,
    BatchRef,
    batch_prefix,
    committed_versions,
    next_version,
    quarantine_prefix,
    read_manifest,
)
from pipeline.base.records import Stored
from pipeline.base.sections import ValidationConfig
from pipeline.base.store import ObjectStore, frame_to_parquet, get_frame, join_key, put_json
from pipeline.steps.landing.ingest import commit_version
from pipeline.steps.landing.sources import BatchExists, IngestError, normalise, now_iso
from pipeline.steps.quality.reference import reference_categories
from pipeline.steps.quality.validation import ValidationFailed, ValidationSummary, validate_frame
from training.api import DatasetSpec

__all__ = ["NotReleasable", "Release", "StillRefused", "release_batch", "spec_fingerprint"]

log = logging.getLogger(__name__)

REVALIDATIONS = "revalidations"


class NotReleasable(IngestError):
    """The quarantined version cannot be re-checked (never read as a table, or absent)."""


class StillRefused(ValidationFailed):
    """The quarantined batch fails the current spec too; it stays in quarantine."""

    def __init__(self, summary: ValidationSummary, spec_hash: str) -> None:
        super().__init__(summary)
        lines = summary.message().splitlines()[1:]
        head = (
            f"batch {summary.ref} still fails validation against the current spec "
            f"(sha256 {spec_hash}; {len(summary.failed)} of {summary.evaluated} expectations) "
            "and stays quarantined; fix the data (ingest a corrected file) or the spec:"
        )
        self.args = ("\n".join([head, *lines]),)


@dataclass(frozen=True)
class Release(Stored):
    """One re-check of a quarantined version, and the version it was released as."""

    quarantined: BatchRef
    status: Literal["released", "already released"]
    released: BatchRef
    who: str
    at: str
    spec_hash: str
    refusal: str
    refused_at: str
    validation: ValidationSummary | None = None

    def message(self) -> str:
        if self.status == "already released":
            return (
                f"batch {self.quarantined} was already released as {self.released} by "
                f"{self.who} at {self.at} (spec sha256 {self.spec_hash}); nothing to do"
            )
        checks = f"{self.validation.evaluated} expectations, " if self.validation else ""
        return (
            f"released quarantined {self.quarantined} as {self.released}: it passes the "
            f"current spec (sha256 {self.spec_hash}; {checks}refused at {self.refused_at}: "
            f"{self.refusal}); the quarantined copy and its refusal are kept"
        )


def spec_fingerprint(spec: DatasetSpec) -> str:
    """SHA-256 (12 hex digits) of the spec's content: what a re-check was checked against."""
    text = json.dumps(spec.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _released_as(store: ObjectStore, ref: BatchRef) -> tuple[BatchRef, dict[str, Any]] | None:
    """The batch version that a release of quarantined ``ref`` landed, if any."""
    for version in committed_versions(store, ref.dataset, ref.batch_id):
        landed = BatchRef(ref.dataset, ref.batch_id, version)
        origin = read_manifest(store, batch_prefix(landed)).get("released_from") or {}
        if origin.get("version") == ref.version:
            return landed, origin
    return None


def _quarantined_frame(store: ObjectStore, ref: BatchRef, spec: DatasetSpec) -> pd.DataFrame:
    prefix = quarantine_prefix(ref)
    stored = join_key(prefix, FEATURES)
    if not store.exists(stored):
        reason = read_manifest(store, prefix).get("reason", "it could not be read")
        raise NotReleasable(
            f"batch {ref} was refused before it could be read as a table ({reason}); no spec "
            "change releases it: fix the file and ingest it again"
        )
    # normalised again with the current spec (its timestamp column may be what was fixed)
    return normalise(get_frame(store, stored), spec)


def release_batch(
    store: ObjectStore,
    spec: DatasetSpec,
    ref: BatchRef,
    *,
    who: str,
    reference_id: str | None = None,
    config: ValidationConfig | None = None,
    new_version: bool = False,
) -> Release:
    """Re-check quarantined version ``ref`` against ``spec``; land it when it passes.

    Raises :class:`StillRefused` (a :class:`ValidationFailed`) when it fails again,
    :class:`NotReleasable` when it was never read as a table, and
    :class:`~pipeline.base.layout.BatchNotFound` when ``ref`` is not quarantined.
    ``reference_id``: the snapshot whose categories the unseen-category checks use.
    ``new_version``: release it although the batch holds a valid version (the released
    one becomes the newest), as ``ingest --new-version`` lands different content.
    """
    prefix = quarantine_prefix(ref)
    if ref.version not in committed_versions(store, ref.dataset, ref.batch_id, "quarantine"):
        held = committed_versions(store, ref.dataset, ref.batch_id, "quarantine")
        names = ", ".join(f"v{v}" for v in held) or "none"
        raise BatchNotFound(
            f"batch {ref} is not quarantined (quarantined versions of "
            f"{ref.dataset}/{ref.batch_id}: {names}); nothing to revalidate"
        )
    refused = read_manifest(store, prefix)
    refusal = str(refused.get("reason", "failed validation"))
    refused_at = str(refused.get("quarantined_at", ""))
    digest = spec_fingerprint(spec)
    done = _released_as(store, ref)
    if done is not None:
        landed, origin = done
        return Release(
            ref, "already released", landed, str(origin.get("by", "")),
            str(origin.get("at", "")), str(origin.get("spec_sha256", "")), refusal, refused_at,
        )  # fmt: skip
    valid = committed_versions(store, ref.dataset, ref.batch_id)
    if valid and not new_version:
        raise BatchExists(
            f"batch {ref.dataset}/{ref.batch_id} already holds a valid version "
            f"(v{valid[-1]}); releasing {ref} would make it the newest in its place. Pass "
            "--new-version (new_version=True) to release it all the same"
        )
    frame = _quarantined_frame(store, ref, spec)
    categories = reference_categories(store, spec.name, reference_id) if reference_id else None
    summary = validate_frame(
        frame, spec, ref=ref, categories=categories, reference_id=reference_id, config=config
    )
    at = now_iso()
    attempt = {
        "who": who,
        "at": at,
        "spec_sha256": digest,
        "reference_id": reference_id,
        "passed": summary.success,
        "failed": [f.line() for f in summary.failed],
    }
    name = f"{at.replace(':', '').replace('+0000', 'Z')}-{digest}-{uuid.uuid4().hex[:6]}.json"
    put_json(store, join_key(prefix, REVALIDATIONS, name), attempt)
    if not summary.success:
        raise StillRefused(replace(summary, quarantine_uri=store.uri(prefix)), digest)
    data = frame_to_parquet(frame)
    landed = BatchRef(
        ref.dataset,
        ref.batch_id,
        next_version(store, ref.dataset, ref.batch_id, ("batches", "quarantine")),
    )
    origin = {
        "version": ref.version,
        "refusal": refusal,
        "refused_at": refused_at,
        "quarantine": store.uri(prefix),
        "by": who,
        "at": at,
        "spec_sha256": digest,
    }
    manifest = {
        "kind": "features",
        "rows": len(frame),
        "columns": {str(c): str(t) for c, t in frame.dtypes.items()},
        # the identity of the content as it came in, so ingesting it again finds this version
        "content_sha256": refused.get("content_sha256"),
        "source": refused.get("source"),
        "bytes": len(data),
        "released_from": origin,
    }
    commit_version(store, landed, batch_prefix(landed), FEATURES, data, manifest)
    log.info("released %s as %s (spec %s, by %s)", ref, landed, digest, who)
    return Release(ref, "released", landed, who, at, digest, refusal, refused_at, summary)
