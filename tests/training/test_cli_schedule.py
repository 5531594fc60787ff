"""``python -m training schedule``: the preview users run before a long job."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.training.helpers import TINY
from tests.training.preview_support import train_then_preview
from training.cli.main import main
from training.config.train import load_config
from training.schedule import CosineSchedule

ROOT = Path(__file__).resolve().parents[2]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_prints_rates_at_chosen_steps_and_draws_the_curve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "curve.png"
    rc = main(
        ["schedule", "--lr-max", "0.1", "--cycle-steps", "100", "--cycle-mult", "2"]
        + ["--warmup-steps", "10", "--at", "0,5,10,110,309,310", "--png", str(png), "--json"]
    )
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    expected = CosineSchedule(0.1, 100, cycle_mult=2, warmup_steps=10)
    assert [r["step"] for r in out["rates"]] == [0, 5, 10, 110, 309, 310]
    assert [r["lr"] for r in out["rates"]] == expected.lrs([0, 5, 10, 110, 309, 310])
    assert [r["phase"] for r in out["rates"]][:2] == ["warmup", "warmup"]
    width, height = _png_size(png)
    assert width > 600
    assert height > 250


def test_table_lists_boundaries_and_cycle_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["schedule", "--lr-max", "1", "--cycle-steps", "10", "--max-cycles", "3", "--no-png"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "cycle ends (best-per-cycle checkpoints): [9, 19, 29]" in out
    assert "fingerprint:" in out


def test_config_file_and_flag_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        "schedule:\n  lr_max: 0.5\n  cycle_steps: 20\n  lr_min: 0.01\n  restart_warmup_steps: 2\n"
        "  warmup_steps: 0\n"
    )
    argv = ["schedule", "--config", str(cfg), "--lr-max", "0.2", "--at", "0", "--no-png"]
    assert main([*argv, "--steps-per-epoch", "50"]) == 0
    assert "0.2" in capsys.readouterr().out.splitlines()[1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr-max", "0.1", "--cycle-steps", "0"], "cycle_steps must be an integer >= 1, got 0"),
        (
            ["--lr-max", "0.1", "--cycle-steps", "10", "--cycle-mult", "0.5"],
            "cycle_mult must be >= 1",
        ),
        (["--cycle-steps", "10"], "the schedule needs --lr-max"),
        (["--lr-max", "0.1", "--cycle-steps", "10", "--at", "1,x"], "--at expects comma-separated"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["schedule", "--no-png", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_unknown_key_in_config_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("schedule:\n  lr_max: 0.1\n  cycle_steps: 10\n  cycle_mul: 2\n")
    assert main(["schedule", "--config", str(cfg), "--no-png"]) == 2
    err = capsys.readouterr().err
    assert "schedule.cycle_mul: unknown field; valid fields here: lr_max, cycle_steps" in err
    flat = tmp_path / "flat.yaml"
    flat.write_text("lr_max: 0.1\ncycle_steps: 10\ncycle_mul: 2\n")
    assert main(["schedule", "--config", str(flat), "--no-png"]) == 2
    assert "unknown schedule parameter(s) ['cycle_mul']" in capsys.readouterr().err


def test_runs_as_a_module(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "training", "schedule", "--lr-max", "0.1", "--cycle-steps", "50"]
        + ["--png", str(tmp_path / "s.png")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "s.png").stat().st_size > 10_000


def _tiny_yaml(path: Path, **schedule: object) -> Path:
    """The tiny job of tests/training/helpers.py as a training config file."""
    extra = [f"schedule.{k}={json.dumps(v)}" for k, v in schedule.items()]
    config = load_config(None, [*TINY, *extra]).model_dump(mode="json")
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "schedule",
    [{}, {"cycle_steps": None, "cycle_epochs": 0.75, "warmup_steps": None, "warmup_epochs": 0.2}],
    ids=["steps", "epochs"],
)
def test_a_training_configs_preview_has_the_runs_fingerprint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], schedule: dict[str, object]
) -> None:
    cfg = _tiny_yaml(tmp_path / "train.yaml", **schedule)
    _, err = train_then_preview(cfg, tmp_path / "runs", capsys)
    assert "steps per epoch: " in err
