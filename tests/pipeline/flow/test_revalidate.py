"""python -m pipeline revalidate: a spec mistake no longer locks a batch for good.

On a dataset that is not flights (tests/pipeline/loans.py), through the command line
and the real files: the spec says ``region`` is never null, the first months have it
empty, validation refuses them; after the spec is fixed, revalidate releases the
batch as its next version, keeping the quarantined copy, its refusal and who/when/
which spec; a batch whose data is wrong stays refused with the reason.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from tests.pipeline import loans
from tests.pipeline.cli_support import clear_pipeline_env, run_cli

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    clear_pipeline_env(monkeypatch)
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COSINE_RETRAIN_DATASET_SPEC", str(tmp_path / "loans.yaml"))
    monkeypatch.setenv("COSINE_RETRAIN_ACTOR", "ana@laptop")
    monkeypatch.chdir(ROOT)
    return tmp_path / "home"


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _spec_sha(path: Path) -> str:
    """The spec's hash as recorded: SHA-256 of its content, sorted JSON (12 digits)."""
    from training.data.spec import load_spec

    text = json.dumps(load_spec(path).model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def test_a_fixed_spec_releases_the_batch_and_keeps_its_history(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path = loans.write_spec(tmp_path / "loans.yaml", region_nulls=0.0)  # the mistake
    wrong_sha = _spec_sha(spec_path)
    source = tmp_path / "2024-01.csv"
    frame = loans.batch("2024-01", 500, seed=1, region_nulls=1.0)
    frame.to_csv(source, index=False)
    store = home / "store" / "datasets" / "loans"

    assert run_cli(capsys, "ingest", str(source), "--batch-id", "2024-01")[0] == 0
    code, _, err = run_cli(capsys, "validate", "2024-01")
    assert code == 1
    assert "region" in err
    refused = _files(store / "quarantine/2024-01/v1")
    assert "features.parquet" in refused

    # the same file again is refused, and the message says how to get out
    code, _, err = run_cli(capsys, "ingest", str(source), "--batch-id", "2024-01")
    assert code == 2
    assert err.count("\n") == 1
    assert "python -m pipeline revalidate 2024-01 --version 1" in err
    code, _, err = run_cli(capsys, "validate", "2024-01", "--version", "1")
    assert code == 2
    assert err.endswith("run python -m pipeline revalidate 2024-01 --version 1\n")

    # with the spec unchanged, revalidate refuses again and names the failed expectation
    code, _, err = run_cli(capsys, "revalidate", "2024-01", "--reference", "none")
    assert code == 1
    assert err.startswith(
        f"error: batch loans/2024-01/v1 still fails validation against the "
        f"current spec (sha256 {wrong_sha};"
    )
    assert "expect_column_values_to_not_be_null" in err
    assert "region" in err
    assert not (store / "batches/2024-01/v2").exists()

    loans.write_spec(spec_path, region_nulls=1.0)  # the fix
    fixed_sha = _spec_sha(spec_path)
    assert fixed_sha != wrong_sha
    code, out, _ = run_cli(capsys, "revalidate", "2024-01", "--reference", "none", "--json")
    assert code == 0
    release = json.loads(out)
    assert release["status"] == "released"
    assert release["quarantined"]["version"] == 1
    assert release["released"]["version"] == 2
    assert (release["who"], release["spec_hash"]) == ("ana@laptop", fixed_sha)
    assert "expect_column_values_to_not_be_null" in release["refusal"]

    # the released version holds the rows of the file as it came in
    landed = pd.read_parquet(store / "batches/2024-01/v2/features.parquet")
    expected = pd.read_csv(source, parse_dates=["applied_at"])
    pd.testing.assert_frame_equal(landed, expected, check_dtype=False)
    manifest = json.loads((store / "batches/2024-01/v2/manifest.json").read_text())
    origin = manifest["released_from"]
    assert (origin["version"], origin["by"], origin["spec_sha256"]) == (1, "ana@laptop", fixed_sha)
    assert origin["refusal"] == release["refusal"]
    assert manifest["content_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    # its validation report is stored, as for any valid batch
    reports = home / "store/reports/loans/2024-01/v2/validation"
    summaries = [json.loads(p.read_text()) for p in reports.glob("*/summary.json")]
    assert [s["success"] for s in summaries] == [True]

    # nothing of the quarantined version was lost or overwritten; every re-check is recorded
    after = _files(store / "quarantine/2024-01/v1")
    assert {k: v for k, v in after.items() if not k.startswith("revalidations/")} == refused
    attempts = sorted(
        (json.loads(v) for k, v in after.items() if k.startswith("revalidations/")),
        key=lambda a: a["passed"],
    )
    assert [(a["passed"], a["spec_sha256"], a["who"]) for a in attempts] == [
        (False, wrong_sha, "ana@laptop"),
        (True, fixed_sha, "ana@laptop"),
    ]
    assert "region" in attempts[0]["failed"][0]

    code, out, _ = run_cli(capsys, "batches")
    assert "2024-01      versions [2]  quarantined [1]  labels -  v1 released as v2\n" in out

    # again: a no-op that names what happened before (default reference: the champion's,
    # none yet); ingesting the same file finds the released version
    code, out, _ = run_cli(capsys, "revalidate", "2024-01")
    assert code == 0
    assert out.startswith(
        "batch loans/2024-01/v1 was already released as loans/2024-01/v2 by ana@laptop"
    )
    assert not (store / "batches/2024-01/v3").exists()
    code, out, _ = run_cli(capsys, "ingest", str(source), "--batch-id", "2024-01")
    assert code == 0
    assert "already holds this content" in out
    assert "loans/2024-01/v2" in out


def test_wrong_data_stays_refused_and_bad_requests_are_clear(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loans.write_spec(tmp_path / "loans.yaml")
    source = tmp_path / "2024-02.csv"
    frame = loans.batch("2024-02", 500, seed=2)
    frame.loc[:9, "income"] = -5.0  # negative incomes: the data is wrong, not the spec
    frame.to_csv(source, index=False)
    assert run_cli(capsys, "ingest", str(source), "--batch-id", "2024-02")[0] == 0
    assert run_cli(capsys, "validate", "2024-02")[0] == 1
    code, _, err = run_cli(capsys, "revalidate", "2024-02", "--version", "1", "--reference", "none")
    assert code == 1
    assert "still fails validation" in err
    assert "expect_column_values_to_be_between" in err
    assert "income" in err
    assert "income: 10 of 500 values (2.00%) lie outside [0, 500000]; e.g. -5" in err
    store = home / "store/datasets/loans"
    assert sorted(p.name for p in (store / "batches").rglob("v*")) == []

    # a version that is not quarantined, a batch that never was
    code, _, err = run_cli(capsys, "revalidate", "2024-02", "--version", "7", "--reference", "none")
    assert code == 2
    assert err.startswith(
        "error: batch loans/2024-02/v7 is not quarantined (quarantined "
        "versions of loans/2024-02: v1)"
    )
    code, _, err = run_cli(capsys, "revalidate", "2024-05", "--reference", "none")
    assert code == 2
    assert (
        err == "error: batch loans/2024-05 has no quarantined version; nothing to "
        "revalidate (python -m pipeline batches lists them)\n"
    )

    # a file that was never read as a table: no spec change can release it
    empty = tmp_path / "2024-03.csv"
    empty.write_text(",".join(frame.columns) + "\n")
    assert run_cli(capsys, "ingest", str(empty), "--batch-id", "2024-03")[0] == 2
    code, _, err = run_cli(capsys, "revalidate", "2024-03", "--reference", "none")
    assert code == 2
    assert "was refused before it could be read as a table" in err
    assert "fix the file and ingest it again" in err
