"""Ingestion: idempotent landing, versions, late labels, and the unreadable inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.base.layout import (
    BatchNotFound,
    BatchRef,
    committed_versions,
    read_batch,
    read_labels,
    resolve_batch,
)
from pipeline.base.store import InvalidKey, LocalStore, ObjectStore, get_json
from pipeline.steps.landing.ingest import (
    ingest_file,
    ingest_flights_month,
    ingest_frame,
    parse_month,
)
from pipeline.steps.landing.labels import ingest_flights_labels, ingest_labels
from pipeline.steps.landing.sources import (
    BatchExists,
    IngestError,
    UnreadableSource,
    frame_fingerprint,
)


def test_month_lands_once_and_again_is_a_noop(store: ObjectStore, spec) -> None:
    first = ingest_flights_month(store, spec, 3)
    assert first.status == "landed"
    assert first.ref == BatchRef("flights", "2013-03", 1)
    assert first.rows == 28_834
    again = ingest_flights_month(store, spec, "2013-03")
    assert again.status == "unchanged"
    assert "nothing to do" in again.message
    assert committed_versions(store, "flights", "2013-03") == [1]
    manifest = get_json(store, "datasets/flights/batches/2013-03/v1/manifest.json")
    assert manifest["rows"] == 28_834
    assert manifest["content_sha256"] == first.content_sha256


def test_different_content_is_refused_then_versioned(store: ObjectStore, spec, march) -> None:
    ingest_frame(store, spec, march, "b1")
    before = store.get_bytes("datasets/flights/batches/b1/v1/features.parquet")
    changed = march.assign(distance=march["distance"] + 1)
    with pytest.raises(BatchExists, match=r"already holds different content \(v1\).*--new-version"):
        ingest_frame(store, spec, changed, "b1")
    assert store.get_bytes("datasets/flights/batches/b1/v1/features.parquet") == before
    v2 = ingest_frame(store, spec, changed, "b1", new_version=True)
    assert v2.ref.version == 2
    assert "v1 is kept" in v2.message
    assert read_batch(store, BatchRef("flights", "b1", 1)).equals(march)
    assert read_batch(store, v2.ref)["distance"].equals(changed["distance"])
    assert resolve_batch(store, "flights", "b1") == v2.ref
    assert resolve_batch(store, "flights", "b1", 1).version == 1


def test_csv_file_lands_with_parsed_timestamps(
    local_store: LocalStore, spec, march, tmp_path: Path
) -> None:
    path = tmp_path / "march.csv"
    march.to_csv(path, index=False)
    result = ingest_file(local_store, spec, str(path), "2024-03")
    stored = read_batch(local_store, result.ref)
    assert pd.api.types.is_datetime64_any_dtype(stored["sched_dep"])
    assert (stored["sched_dep"] == march["sched_dep"]).all()
    assert ingest_file(local_store, spec, str(path), "2024-03").status == "unchanged"


def test_batch_ids_cannot_escape(local_store: LocalStore, spec, march) -> None:
    for bad in ("../../etc", "a/b", "..", "x\\y"):
        with pytest.raises(InvalidKey, match="batch id"):
            ingest_frame(local_store, spec, march, bad)
    assert local_store.list() == []


def test_parse_month() -> None:
    assert [parse_month(t) for t in ("3", "03", "2013-03", "12", 7)] == [3, 3, 3, 12, 7]
    assert [parse_month(t) for t in ("0", "13", "2014-03", "march", "")] == [None] * 5


def test_fingerprint_sees_values_and_types(march) -> None:
    assert frame_fingerprint(march) == frame_fingerprint(march.copy())
    assert frame_fingerprint(march) != frame_fingerprint(march.iloc[::-1])
    assert frame_fingerprint(march) != frame_fingerprint(
        march.assign(distance=march["distance"].astype("float32"))
    )


# ------------------------------------------------------------------------------ labels


def test_labels_arrive_later_as_a_separate_step(store: ObjectStore, spec) -> None:
    with pytest.raises(BatchNotFound, match="ingest them first"):
        ingest_flights_labels(store, spec, 3)
    ingest_flights_month(store, spec, 3)
    landed = ingest_flights_labels(store, spec, 3)
    assert (landed.kind, landed.status, landed.rows) == ("labels", "landed", 28_834)
    assert ingest_flights_labels(store, spec, 3).status == "unchanged"
    labels = read_labels(store, "flights", "2013-03", 1)
    assert set(labels["late"].unique()) == {0, 1}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.drop(columns=["late"]), r"lack column\(s\) \['late'\]"),
        (lambda df: df.assign(late=2), r"must be 0 or 1, found \['2'\]"),
        (lambda df: df.assign(late=None), "is null in"),
        (lambda df: pd.concat([df, df.head(2)]), "2 duplicate ids"),
        (lambda df: df.assign(flight_id="other-" + df["flight_id"]), "none of the .* label ids"),
    ],
)
def test_bad_labels_are_refused(
    local_store: LocalStore, spec, flights_year, mutate, message
) -> None:
    features, labels = flights_year[3]
    ingest_frame(local_store, spec, features.head(2000), "b1")
    with pytest.raises(IngestError, match=message):
        ingest_labels(local_store, spec, mutate(labels.head(2000)), "b1")
    assert committed_versions(local_store, "flights", "b1", "labels") == []


def test_corrected_labels_need_a_new_version(local_store: LocalStore, spec, flights_year) -> None:
    features, labels = flights_year[3]
    ingest_frame(local_store, spec, features.head(2000), "b1")
    ingest_labels(local_store, spec, labels.head(2000), "b1")
    fixed = labels.head(2000).assign(late=1 - labels.head(2000)["late"])
    with pytest.raises(BatchExists, match="labels for flights/b1 already exist"):
        ingest_labels(local_store, spec, fixed, "b1")
    assert ingest_labels(local_store, spec, fixed, "b1", new_version=True).ref.version == 2


# ------------------------------------------------------------------------------ unreadable inputs


def _good_batch(store: LocalStore, spec, march) -> bytes:
    """Store a good v1 of batch b1 and return its bytes (must never change)."""
    ingest_frame(store, spec, march, "b1")
    return store.get_bytes("datasets/flights/batches/b1/v1/features.parquet")


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


CATALOGUE = {
    "empty file": ("batch.csv", lambda m: b"", r"is empty \(0 bytes\)"),
    "header-only CSV": (
        "batch.csv",
        lambda m: m.head(0).to_csv(index=False).encode(),
        "has a header but no rows",
    ),
    "zero-row Parquet": (
        "batch.parquet",
        lambda m: _parquet_bytes(m.head(0)),
        "has a header but no rows",
    ),
    "truncated Parquet": (
        "batch.parquet",
        lambda m: _parquet_bytes(m)[:5000],
        r"corrupt Parquet file \(truncated",
    ),
    "corrupt Parquet": (
        "batch.parquet",
        lambda m: b"PAR1" + b"\x13garbage" * 200 + b"PAR1",
        "corrupt Parquet file",
    ),
    "CSV named .parquet": (
        "batch.parquet",
        lambda m: m.head(50).to_csv(index=False).encode(),
        r"named \.parquet but is not Parquet .*looks like CSV/text",
    ),
    "Parquet named .csv": (
        "batch.csv",
        lambda m: _parquet_bytes(m.head(50)),
        r"named \.csv but holds Parquet; rename it",
    ),
    "binary junk named .csv": (
        "batch.csv",
        lambda m: bytes(range(256)) * 20,
        "neither Parquet nor CSV text",
    ),
    "no CSV header at all": ("batch.csv", lambda m: b"\n\n\n", "no CSV header and no rows"),
}


@pytest.mark.parametrize("case", sorted(CATALOGUE))
def test_unreadable_input_is_quarantined_and_loses_nothing(
    local_store: LocalStore, spec, march, tmp_path: Path, case: str
) -> None:
    name, make, message = CATALOGUE[case]
    good = _good_batch(local_store, spec, march)
    path = tmp_path / name
    path.write_bytes(make(march))
    with pytest.raises(UnreadableSource, match=message) as info:
        ingest_file(local_store, spec, str(path), "b1", new_version=True)
    assert "Quarantined as flights/b1/v2" in str(info.value)
    # the stored batch is untouched, the bad input is kept as it came, with the reason
    assert local_store.get_bytes("datasets/flights/batches/b1/v1/features.parquet") == good
    assert committed_versions(local_store, "flights", "b1") == [1]
    assert local_store.get_bytes(f"datasets/flights/quarantine/b1/v2/source{path.suffix}") == (
        path.read_bytes()
    )
    evidence = json.loads(
        local_store.get_bytes("datasets/flights/quarantine/b1/v2/validation.json")
    )
    assert evidence["stage"] == "read"
    assert evidence["success"] is False
    # the same bad file again: refused at once, pointing at the quarantined copy
    with pytest.raises(IngestError, match="was already refused as flights/b1 v2"):
        ingest_file(local_store, spec, str(path), "b1", new_version=True)


def test_missing_input_file(local_store: LocalStore, spec, tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="does not exist"):
        ingest_file(local_store, spec, str(tmp_path / "nope.csv"), "b1")
    with pytest.raises(IngestError, match="is a folder"):
        ingest_file(local_store, spec, str(tmp_path), "b1")
    assert local_store.list() == []


def test_input_from_s3(s3_server, spec, march, local_store: LocalStore) -> None:
    """An s3:// source is read with the configured endpoint and credentials."""
    from pipeline.base.store import S3Store

    settings = s3_server.storage(s3_server.new_bucket())
    S3Store.from_config(settings).put_bytes("incoming/march.parquet", _parquet_bytes(march))
    uri = f"s3://{settings.bucket}/pipeline-tests/incoming/march.parquet"
    result = ingest_file(local_store, spec, uri, "b1", storage=settings)
    assert result.rows == len(march)
    with pytest.raises(IngestError, match="cannot read input"):
        ingest_file(local_store, spec, uri + ".missing", "b2", storage=settings)
