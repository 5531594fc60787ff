"""python -m pipeline: commands, exit codes, one-line errors, light imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.apps.cli import main
from tests.pipeline.cli_support import clear_pipeline_env, run_cli

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    clear_pipeline_env(monkeypatch)
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(ROOT)  # the default spec path is relative to the repository
    return tmp_path / "home"


def test_ingest_month_then_again(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "ingest", "2013-02")
    assert code == 0
    assert out.strip() == "landed 24,951 rows as flights/2013-02/v1"
    assert (home / "store/datasets/flights/batches/2013-02/v1/features.parquet").is_file()
    code, out, _ = run_cli(capsys, "ingest", "2", "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["status"], data["version"], data["rows"]) == ("unchanged", 1, 24_951)
    code, out, _ = run_cli(capsys, "ingest-labels", "2013-02")
    assert code == 0
    assert "landed 24,951 labels for flights/2013-02 as v1" in out
    code, out, _ = run_cli(capsys, "batches")
    assert "2013-02      versions [1]  quarantined -  labels [1]" in out
    # its ledger: landed and labelled (once each, however often ingested), nothing checked
    assert (
        "ledger: landed v1, labels_received v1  (missing: validated, drift_checked, scored)"
    ) in out
    code, _, _ = run_cli(capsys, "validate", "2013-02")
    assert code == 0
    code, out, _ = run_cli(capsys, "batches", "--json")
    (row,) = json.loads(out)["batches"]
    assert row["ledger"] == "landed v1, validated v1, labels_received v1"
    assert row["missing"] == ["drift_checked", "scored"]


def test_file_ingest_needs_a_batch_id(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, march
) -> None:
    path = tmp_path / "batch.csv"
    march.to_csv(path, index=False)
    code, _, err = run_cli(capsys, "ingest", str(path))
    assert code == 2
    assert err.startswith("error: ingesting a file needs --batch-id")
    assert err.count("\n") == 1
    code, out, _ = run_cli(capsys, "ingest", str(path), "--batch-id", "2024-03")
    assert code == 0
    assert "as flights/2024-03/v1" in out
    march.head(1500).to_csv(path, index=False)
    code, _, err = run_cli(capsys, "ingest", str(path), "--batch-id", "2024-03")
    assert code == 2
    assert "refusing to replace it. Pass --new-version" in err
    code, out, _ = run_cli(capsys, "ingest", str(path), "--batch-id", "2024-03", "--new-version")
    assert code == 0
    assert "as flights/2024-03/v2 (new version; v1 is kept)" in out


def test_validation_failure_exits_1_and_quarantines(
    home: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, march
) -> None:
    path = tmp_path / "bad.parquet"
    march.assign(distance=-1.0).to_parquet(path, index=False)
    assert run_cli(capsys, "ingest", str(path), "--batch-id", "bad")[0] == 0
    code, _, err = run_cli(capsys, "validate", "bad")
    assert code == 1
    assert err.startswith("error: batch flights/bad/v1 failed validation")
    assert "distance: 3,000 of 3,000 values (100.00%) lie outside [1, 6000]; e.g. -1" in err
    code, _, err = run_cli(capsys, "validate", "bad")
    assert code == 2
    assert "has no valid version: v1 quarantined" in err


def test_user_errors_are_one_line(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(capsys, "ingest", "2013-02")[0] == 0
    cases = [
        (["validate", "2013-05"], "was never ingested (run ingest first)"),
        (["validate", "2013-02", "--version", "4"], "has no version 4; stored: v1"),
        (["drift", "2013-02", "--reference", "r"], "reference snapshot flights/r does not exist"),
        (["ingest", "../etc"], "ingesting a file needs --batch-id"),
        (["ingest", "x.csv", "--batch-id", "../up"], "batch id '../up' may not contain"),
        (["reference", "r1", "--batches", "2013-09"], "was never ingested"),
    ]
    for argv, message in cases:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, argv
        assert err.startswith("error: "), err
        assert message in err, err
        assert "Traceback" not in err


def test_bad_config_is_one_clear_error(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COSINE_RETRAIN_STORAGE__KIND", "dropbox")
    code, _, err = run_cli(capsys, "batches")
    assert code == 2
    assert "storage.kind: Input should be 'local' or 's3'" in err
    assert "COSINE_RETRAIN_STORAGE__KIND" in err


def test_argparse_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["drift", "2013-03"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "error: the following arguments are required: --reference" in err
    assert main([]) == 2


def test_module_entry_point_and_light_imports(tmp_path: Path) -> None:
    """`python -m pipeline` works from the repository, and importing the CLI, the flow or
    any step loads neither Great Expectations nor Evidently (12-13 s each) nor boto3."""
    env = {**os.environ, "COSINE_RETRAIN_HOME": str(tmp_path / "home")}
    probe = (
        "import importlib, pkgutil, sys, pipeline.apps.cli, pipeline.flow;"
        "import pipeline.base as b, pipeline.steps as s;"
        "names = [m.name for p in (b, s)"
        " for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')];"
        "[importlib.import_module(n) for n in names];"
        "assert len(names) > 25, names;"
        "heavy = [m for m in ('great_expectations', 'evidently', 'boto3') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.stdout.strip() == "[]", out.stderr
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "validate", "nope"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr == "error: batch flights/nope was never ingested (run ingest first)\n"
