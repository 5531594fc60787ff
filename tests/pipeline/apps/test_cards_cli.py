"""``python -m pipeline model-card`` and ``approval`` against a real MLflow server: the
CLI registers, gates, prints and writes the card, and records a person's approval."""

from __future__ import annotations

import json
import os
import pwd
import uuid
from pathlib import Path
from typing import Any

import pytest

from pipeline.apps.cli import main
from pipeline.base.config import load_config
from pipeline.base.store import LocalStore
from pipeline.steps.registry.aliases import alias_history
from tests.pipeline.cli_support import clear_pipeline_env

GATE = {"min_auc": "0.55", "min_slice_auc": "0.4", "slice_min_rows": "150", "max_auc_drop": "0.05"}


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlflow_server: Any):  # type: ignore[no-untyped-def]
    clear_pipeline_env(monkeypatch)
    home = tmp_path / "home"
    model = f"cli_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("COSINE_RETRAIN_HOME", str(home))
    monkeypatch.setenv("COSINE_RETRAIN_MLFLOW__TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("COSINE_RETRAIN_MLFLOW__MODEL_NAME", model)
    for key, value in GATE.items():
        monkeypatch.setenv(f"COSINE_RETRAIN_GATE__{key.upper()}", value)
    return home, model


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_model_card_and_approval_from_the_command_line(
    cli: Any, trained_runs: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    home, model = cli
    versions = []
    for label in ("a", "b"):
        code, out, err = _run(capsys, "register", trained_runs[label].run_id, "--json")
        assert code == 0, err
        versions.append(json.loads(out)["challenger"]["version"])
        code, out, err = _run(capsys, "gate", "--version", versions[-1])
        assert code == 0, out + err
    champion, canary = versions

    code, out, err = _run(capsys, "model-card", canary)
    assert code == 0, err
    assert out.startswith(f"# Model card: {model} v{canary}")
    assert "| PASS | auc_drop_vs_champion |" in out  # the CLI's gate added its evidence
    page = tmp_path / "card.html"
    code, out, err = _run(capsys, "model-card", canary, "--out", str(page), "--publish")
    assert code == 0, err
    assert page.read_text().startswith("<!DOCTYPE html>")
    assert "published as revision 3" in out  # registered, gated, published

    code, out, err = _run(capsys, "model-card", "999")
    assert code == 2
    assert f"{model} has no version '999'" in err

    # no review held it: approving it is an override, recorded with the OS user
    code, out, err = _run(
        capsys, "approval", "approve", canary, "--reason", "reviewed the card", "--override"
    )
    assert code == 0, err
    who = f"{pwd.getpwuid(os.getuid()).pw_name} (command line)"
    assert out.startswith(f"approved as an OVERRIDE: v{canary} by {who} (reviewed the card)")
    assert f"champion v{canary}" in out
    config = load_config(None, home=home)
    history = alias_history(LocalStore(config.home / "store"), model)
    decision = next(m for m in history if m.action == "override_approved")
    assert (decision.who, decision.from_version, decision.to_version) == (who, champion, canary)
    assert "reviewed the card" in decision.why
