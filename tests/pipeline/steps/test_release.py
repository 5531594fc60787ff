"""release_batch on both stores (local folder, S3 through moto): a quarantined
version re-checked against a fixed spec lands as the next version; nothing under
quarantine/ is changed; a concurrent or repeated release creates nothing more."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.base.layout import (
    BatchRef,
    committed_versions,
    quarantine_prefix,
    read_batch,
    read_manifest,
    resolve_batch,
)
from pipeline.base.store import ObjectStore, get_json
from pipeline.steps.landing.ingest import ingest_frame
from pipeline.steps.quality.release import StillRefused, release_batch, spec_fingerprint
from pipeline.steps.quality.validation import ValidationFailed, validate_batch
from tests.pipeline import loans


def _snapshot(store: ObjectStore, prefix: str) -> dict[str, bytes]:
    return {k: store.get_bytes(k) for k in store.list(prefix) if "/revalidations/" not in k}


def test_release_on_both_stores(store: ObjectStore, tmp_path: Path) -> None:
    wrong = loans.spec(tmp_path, region_nulls=0.0)
    frame = loans.batch("2024-01", 300, seed=4, region_nulls=0.5)
    ref = ingest_frame(store, wrong, frame, "2024-01").ref
    with pytest.raises(ValidationFailed):
        validate_batch(store, wrong, ref)
    quarantined = quarantine_prefix(ref)
    before = _snapshot(store, quarantined)
    with pytest.raises(StillRefused, match="region"):
        release_batch(store, wrong, ref, who="ops")

    fixed = loans.spec(tmp_path, region_nulls=0.5)
    release = release_batch(store, fixed, ref, who="ops")
    assert release.status == "released"
    assert release.released == BatchRef("loans", "2024-01", 2)
    assert release.spec_hash == spec_fingerprint(fixed) != spec_fingerprint(wrong)
    assert resolve_batch(store, "loans", "2024-01") == release.released
    pd.testing.assert_frame_equal(read_batch(store, release.released), frame, check_dtype=False)
    origin = read_manifest(store, "datasets/loans/batches/2024-01/v2")["released_from"]
    assert (origin["version"], origin["by"]) == (1, "ops")
    assert _snapshot(store, quarantined) == before
    attempts = [get_json(store, k) for k in store.list(quarantined) if "/revalidations/" in k]
    assert sorted(a["passed"] for a in attempts) == [False, True]

    again = release_batch(store, fixed, ref, who="someone else")
    assert again.status == "already released"
    assert (again.released, again.who, again.at) == (release.released, "ops", release.at)
    assert committed_versions(store, "loans", "2024-01") == [2]
    # the released content is the batch's content: ingesting it again is a no-op
    assert ingest_frame(store, fixed, frame, "2024-01").status == "unchanged"


def test_a_batch_with_a_valid_version_needs_new_version(tmp_path: Path) -> None:
    from pipeline.base.store import LocalStore
    from pipeline.steps.landing.sources import BatchExists

    store = LocalStore(tmp_path / "store")
    wrong = loans.spec(tmp_path, region_nulls=0.0)
    refused = ingest_frame(
        store, wrong, loans.batch("2024-01", 300, seed=5, region_nulls=0.5), "2024-01"
    ).ref
    with pytest.raises(ValidationFailed):
        validate_batch(store, wrong, refused)
    corrected = ingest_frame(store, wrong, loans.batch("2024-01", 300, seed=6), "2024-01").ref
    assert validate_batch(store, wrong, corrected).success
    fixed = loans.spec(tmp_path, region_nulls=0.5)
    with pytest.raises(
        BatchExists,
        match=r"already holds a valid version \(v2\); releasing "
        r"loans/2024-01/v1 would make it the newest",
    ):
        release_batch(store, fixed, refused, who="ops")
    assert committed_versions(store, "loans", "2024-01") == [2]
    release = release_batch(store, fixed, refused, who="ops", new_version=True)
    assert release.released == BatchRef("loans", "2024-01", 3)
    assert committed_versions(store, "loans", "2024-01") == [2, 3]
