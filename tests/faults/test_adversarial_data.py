"""Adversarial input files: refused or judged with a clear message, nothing lost.

The issue: "the bad-input catalogue of the data issue, plus adversarial files (a
gigantic row count claim, deeply nested or binary content, column names with
path separators or shell metacharacters, values at float limits); nothing
crashes the scheduler, nothing escapes the store's prefix."

Every file goes through ``python -m pipeline ingest FILE --batch-id b1
--new-version`` (its ``main()``, in process; one case as a real subprocess, to
see the exit code and stderr a user sees) on top of a good ``v1``, then, when it
landed, through validation (what the drift monitor's ``validate`` task runs).
For each one:

- the outcome is a clear one-line ``error:`` (exit 2, never a traceback) or a
  landed batch; a batch that lands either passes or is quarantined by
  validation with a message that names the column, bounded in size;
- the good ``v1`` is byte for byte what it was, and every key in the store is
  under the store's prefix (the S3 bucket is listed whole, before and after);
- the bad input is kept in quarantine as it came.

The scheduler never runs this code (tasks are separate processes; see
pipeline/apps/dagkit.py::permanent, which turns IngestError into a failed task
without retries), so "nothing crashes the scheduler" is "no case kills or hangs
the process that ingests": one case, a Parquet footer claiming 10^12 rows, was
OOM-killed before pipeline/steps/landing/sources.py checked the footer's claims.
"""

from __future__ import annotations

import io
import json
import os
import re
import resource
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.pipeline.cli_support import run_cli

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "configs" / "datasets" / "flights.yaml"
PREFIX = "faults-adv"
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
MAX_MESSAGE = 4_000  # a message is for a person: a 10 MB field must not end up in it


# ------------------------------------------------------------------------------ the files


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _claims_rows(frame: pd.DataFrame, rows: int, *, only_the_file: bool = False) -> bytes:
    """A real Parquet file whose footer claims ``rows`` rows (and values per column).

    Thrift compact encoding: every i64 field holding the true row count (the file's
    and the row group's num_rows, each column chunk's num_values) follows a field
    header 0x16 and is a zigzag varint; they are rewritten and the footer length fixed.
    ``only_the_file``: only FileMetaData.num_rows (the first of them) lies.
    """
    data = _parquet(frame)
    size = int.from_bytes(data[-8:-4], "little")
    footer = data[-8 - size : -8]
    old = b"\x16" + _varint(2 * len(frame))
    assert footer.count(old) >= 3, "the footer's row counts were not found"
    footer = footer.replace(old, b"\x16" + _varint(2 * rows), 1 if only_the_file else -1)
    return data[: -8 - size] + footer + len(footer).to_bytes(4, "little") + b"PAR1"


def _floats(m: pd.DataFrame) -> pd.DataFrame:
    out = m.copy()
    limits = [np.nan, np.inf, -np.inf, 1e308, -0.0, 5e-324, -1e308, np.finfo(float).max]
    out.loc[: len(limits) - 1, "distance"] = limits
    out.loc[:3, "temp"] = [np.inf, np.nan, -np.inf, 1e308]
    return out


def _hostile_columns(m: pd.DataFrame) -> pd.DataFrame:
    return m.rename(columns={"temp": "../../etc/passwd", "dewp": "$(rm -rf ~)", "humid": "a;b|c"})


def _nested(m: pd.DataFrame) -> pd.DataFrame:
    deep: Any = [0]
    for _ in range(40):
        deep = {"k": deep}
    return m.assign(
        dest=[{"a": {"b": [1, 2], "c": {"d": [i]}}} for i in range(len(m))],
        carrier=[deep] * len(m),
    )


def _big_field(m: pd.DataFrame) -> pd.DataFrame:
    out = m.astype({"distance": object})
    out.loc[0, "distance"] = "9" * 5 + "x" * 10_000_000  # one 10 MB value in a number column
    return out


# name -> (file name, bytes from the good batch, what must happen)
# outcome: ("refused", pattern of the one-line error) | ("quarantined", pattern of a
# validation line) | ("passes", None)
Case = tuple[str, Callable[[pd.DataFrame], bytes], tuple[str, str | None]]


def _csv(make: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[pd.DataFrame], bytes]:
    return lambda m: make(m).to_csv(index=False).encode()


def _csv_and_parquet(
    name: str,
    make: Callable[[pd.DataFrame], pd.DataFrame],
    *,
    csv: tuple[str, str | None],
    parquet: tuple[str, str | None],
) -> dict[str, Case]:
    """The same frame as ``{name} (CSV)`` and as ``{name} (Parquet)``, each its outcome."""
    return {
        f"{name} (CSV)": ("batch.csv", _csv(make), csv),
        f"{name} (Parquet)": ("batch.parquet", lambda m: _parquet(make(m)), parquet),
    }


CASES: dict[str, Case] = {
    # the data issue's catalogue, through the CLI
    "empty file": ("batch.csv", lambda m: b"", ("refused", r"is empty \(0 bytes\)")),
    "header-only CSV": (
        "batch.csv",
        lambda m: m.head(0).to_csv(index=False).encode(),
        ("refused", "has a header but no rows"),
    ),
    "truncated Parquet": (
        "batch.parquet",
        lambda m: _parquet(m)[:5000],
        ("refused", r"corrupt Parquet file \(truncated"),
    ),
    "CSV named .parquet": (
        "batch.parquet",
        lambda m: m.head(50).to_csv(index=False).encode(),
        ("refused", r"named \.parquet but is not Parquet"),
    ),
    # adversarial
    "footer claims 10^12 rows": (
        "batch.parquet",
        lambda m: _claims_rows(m, 10**12),
        ("refused", r"claims 1,000,000,000,000 rows; one batch may hold at most 2,000,000"),
    ),
    "footer's row count disagrees with its row groups": (
        "batch.parquet",
        lambda m: _claims_rows(m, 10**9, only_the_file=True),
        ("refused", r"footer claims 1,000,000,000 rows, its row groups 3,000"),
    ),
    # a footer that lies consistently (7 rows): 7 rows are read, and the row count fails
    "footer claims 7 rows throughout": (
        "batch.parquet",
        lambda m: _claims_rows(m, 7),
        ("quarantined", r"table: 7 rows; the spec expects 1,000 to 200,000"),
    ),
    "random bytes named .csv": (
        "batch.csv",
        lambda m: np.random.default_rng(7).bytes(200_000),
        ("refused", "neither Parquet nor CSV text"),
    ),
    "random bytes behind a Parquet magic": (
        "batch.parquet",
        lambda m: b"PAR1" + np.random.default_rng(8).bytes(100_000) + b"PAR1",
        ("refused", "corrupt Parquet file"),
    ),
    "deeply nested JSON": (
        "batch.json",
        lambda m: ("[" * 100_000 + "]" * 100_000).encode(),
        ("refused", r"named \.json: only CSV .* and Parquet .* files are read"),
    ),
    "deeply nested text named .csv": (
        "batch.csv",
        lambda m: ("[" * 100_000 + "]" * 100_000).encode(),
        ("refused", r"has a header but no rows .*\(200,000 chars\)"),
    ),
    "nested struct and list columns": (
        "batch.parquet",
        lambda m: _parquet(_nested(m)),
        ("quarantined", r"dest: 3,000 of 3,000 values are not categories"),
    ),
    **_csv_and_parquet(
        "hostile column names",
        _hostile_columns,
        csv=("quarantined", r"unexpected column\(s\) \['\$\(rm -rf ~\)', '\.\./\.\./etc/passwd'"),
        parquet=("quarantined", r"'a;b\|c'\] \(not in the spec\)"),
    ),
    **_csv_and_parquet(
        "float limits",
        _floats,
        csv=(
            "quarantined",
            r"distance: [78] of 3,000 values .* outside \[1, 6000\]; e.g. inf, -inf",
        ),
        parquet=("quarantined", r"temp: 3 of 3,000 values .* outside \[-40, 120\]"),
    ),
    "a 10 MB field": (
        "batch.csv",
        _csv(_big_field),
        ("quarantined", r"distance: 1 of 3,000 values are not numbers; e.g. '99999x.*chars\)"),
    ),
}


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def good() -> pd.DataFrame:
    """3,000 valid rows of March (every 9th flight), as the data tests use."""
    from training.data.flights import load_months

    return load_months([3])[0].iloc[::9].head(3000).reset_index(drop=True)


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    from tests.support import moto_server

    with moto_server() as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(params=["local", "s3"])
def where(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The store the CLI is configured with (env vars), and a way to list all it holds."""
    home = tmp_path / "home"
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(home))
    monkeypatch.setenv("COSINE_RETRAIN_DATASET_SPEC", str(SPEC))
    monkeypatch.delenv("COSINE_RETRAIN_CONFIG", raising=False)
    if request.param == "local":
        root = tmp_path / "store-root"
        monkeypatch.setenv("COSINE_RETRAIN_STORAGE__ROOT", str(root / PREFIX))

        def everything() -> set[str]:  # the store's parent: the prefix is one folder in it
            return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}

        return {"kind": "local", "root": f"{PREFIX}/", "list": everything}
    import boto3

    endpoint = request.getfixturevalue("moto")
    bucket = f"adv-{uuid.uuid4().hex[:12]}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **_creds())
    s3.create_bucket(Bucket=bucket)
    for key, value in {
        "KIND": "s3",
        "BUCKET": bucket,
        "PREFIX": PREFIX,
        "ENDPOINT_URL": endpoint,
        "REGION": "us-east-1",
        "ACCESS_KEY_ID": "testing",
        "SECRET_ACCESS_KEY": "testing",
        "MAX_ATTEMPTS": "2",
    }.items():
        monkeypatch.setenv(f"COSINE_RETRAIN_STORAGE__{key}", value)

    def listing() -> set[str]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    return {"kind": "s3", "root": f"{PREFIX}/", "list": listing}


def _creds() -> dict[str, str]:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def _store() -> Any:
    from pipeline.base.config import load_config
    from pipeline.base.store import build_store

    return build_store(load_config())


# ------------------------------------------------------------------------------ the tests


@pytest.mark.parametrize("case", list(CASES))
def test_adversarial_file_is_refused_or_judged_and_loses_nothing(
    case: str,
    where: dict[str, Any],
    good: pd.DataFrame,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fault_mode: Any,
) -> None:
    if where["kind"] == "s3" and not fault_mode.long and case not in S3_QUICK:
        pytest.skip("quick mode runs a few cases against S3; FAULTS=long runs them all")
    from pipeline.base.layout import BatchRef, committed_versions
    from pipeline.base.store import frame_to_parquet
    from training.data.spec import load_spec

    name, make, (outcome, pattern) = CASES[case]
    spec = load_spec(SPEC)
    good_file = tmp_path / "good.parquet"
    good_file.write_bytes(frame_to_parquet(good))
    assert run_cli(capsys, "ingest", str(good_file), "--batch-id", "b1")[0] == 0
    store = _store()
    v1 = store.get_bytes("datasets/flights/batches/b1/v1/features.parquet")
    before = where["list"]()
    path = tmp_path / "in" / name
    path.parent.mkdir()
    data = make(good)
    path.write_bytes(data)

    code, out, err = run_cli(capsys, "ingest", str(path), "--batch-id", "b1", "--new-version")
    quarantined_source = f"datasets/flights/quarantine/b1/v2/source{path.suffix}"
    if outcome == "refused":
        assert code == 2, (code, out, err)
        assert err.startswith("error: "), err
        assert "Traceback" not in err, err
        assert len(err) < MAX_MESSAGE, len(err)
        assert pattern is not None
        assert re.search(pattern, err), err
        assert "Quarantined as flights/b1/v2" in err, err
        assert store.get_bytes(quarantined_source) == data  # kept as it came
        evidence = json.loads(store.get_bytes("datasets/flights/quarantine/b1/v2/validation.json"))
        assert evidence["stage"] == "read"
        assert evidence["success"] is False
    else:
        assert code == 0, (code, out, err)
        from pipeline.base.sections import ValidationConfig
        from pipeline.steps.quality.validation import ValidationFailed, validate_batch

        ref = BatchRef("flights", "b1", 2)
        # Data Docs (HTML) cost seconds per case: long mode renders them, quick does not
        config = ValidationConfig(data_docs=fault_mode.long)
        if outcome == "passes":
            assert validate_batch(store, spec, ref, config=config).success
        else:
            with pytest.raises(ValidationFailed) as info:
                validate_batch(store, spec, ref, config=config)
            message = str(info.value)
            assert len(message) < MAX_MESSAGE, len(message)
            lines = [ln for ln in message.splitlines() if re.search(pattern, ln)]
            assert lines, message
            assert committed_versions(store, "flights", "b1", "quarantine") == [2]
            assert store.exists("datasets/flights/quarantine/b1/v2/features.parquet")
    # nothing overwritten or lost, nothing outside the prefix
    assert store.get_bytes("datasets/flights/batches/b1/v1/features.parquet") == v1
    assert committed_versions(store, "flights", "b1") == [1]
    after = where["list"]()
    assert before <= after, before - after
    escaped = {k for k in after if not k.startswith(where["root"])}
    assert not escaped, escaped
    # the same file again is refused at once, pointing at the quarantined copy
    code, _, err = run_cli(capsys, "ingest", str(path), "--batch-id", "b1", "--new-version")
    assert code == 2, err
    assert "already refused as flights/b1 v2" in err, err


S3_QUICK = {"footer claims 10^12 rows", "hostile column names (Parquet)"}


@pytest.mark.parametrize(
    "batch_id", ["../../etc", "a/b", "..", "$(id)", "a;b|c", "x" * 101, "-rf", " b"]
)
def test_hostile_batch_ids_are_refused_before_anything_is_written(
    batch_id: str,
    tmp_path: Path,
    good: pd.DataFrame,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COSINE_RETRAIN_DATASET_SPEC", str(SPEC))
    path = tmp_path / "good.csv"
    good.head(1500).to_csv(path, index=False)
    code, out, err = run_cli(capsys, "ingest", str(path), f"--batch-id={batch_id}")
    assert code == 2, (code, out, err)
    assert err.startswith("error: "), err
    assert "batch id" in err, err
    assert not (tmp_path / "home" / "store").exists() or not any(
        p.is_file() for p in (tmp_path / "home" / "store").rglob("*")
    )


def test_the_cli_process_exits_with_a_message_not_a_traceback(
    tmp_path: Path, good: pd.DataFrame
) -> None:
    """The real process, as a user or a task runs it, on the worst case: the footer
    claiming 10^12 rows (capped at 4 GB of address space, so a regression fails this
    test with MemoryError instead of taking the machine down)."""
    path = tmp_path / "huge.parquet"
    path.write_bytes(_claims_rows(good, 10**12))
    env = {
        **os.environ,
        "COSINE_RETRAIN_HOME": str(tmp_path / "home"),
        "COSINE_RETRAIN_DATASET_SPEC": str(SPEC),
    }

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "ingest", str(path), "--batch-id", "b1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=cap,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: input file "), proc.stderr[-3000:]
    assert "claims 1,000,000,000,000 rows" in lines[0]
