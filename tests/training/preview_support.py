"""A training config trained, then previewed by ``python -m training schedule``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from training.cli.main import main


def train_then_preview(
    config: Path, runs: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[dict[str, Any], str]:
    """Train ``config`` (run ``fp`` under ``runs``, no MLflow), then preview its schedule:
    the preview (``--json``) is the run's schedule and the printed fingerprint the run's.
    Returns the run's result.json and what the ``--json`` preview wrote on stderr."""
    argv = ["train", "--config", str(config), "--run-name", "fp", "--no-mlflow"]
    assert main([*argv, "--output-dir", str(runs)]) == 0
    result = json.loads((runs / "fp" / "result.json").read_text())
    capsys.readouterr()
    assert main(["schedule", "--config", str(config), "--no-png", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["schedule"] == result["schedule"]
    assert main(["schedule", "--config", str(config), "--no-png"]) == 0
    printed = capsys.readouterr().out.rsplit("fingerprint: ", 1)[1].strip()
    assert printed == result["schedule_fingerprint"][:16]
    return result, captured.err
