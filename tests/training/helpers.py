"""Helpers for the training tests.

A tiny training job (4,000 rows of January, a 32-unit MLP, 3 short cycles)
shows every behaviour of the real job in a few seconds on one CPU thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from training.checkpoint.files import load_checkpoint, save_checkpoint
from training.config.train import TrainConfig
from training.schedule import CosineSchedule

ROOT = Path(__file__).resolve().parents[2]

# W=5, T0=20, m=1.5, 3 cycles: cycles end at steps 24, 54, 99 (100 steps in all)
TINY = [
    "data.months=[1]",
    "data.max_rows=4000",
    "model.hidden=[32]",
    "optim.batch_size=128",
    "schedule.lr_max=0.003",
    "schedule.lr_min=0.00003",
    "schedule.cycle_steps=20",
    "schedule.warmup_steps=5",
    "schedule.restart_warmup_steps=0",
    "schedule.cycle_mult=1.5",
    "schedule.peak_decay=0.8",
    "schedule.max_cycles=3",
    "eval.every_steps=10",
    "checkpoint.every_steps=10",
    "runtime.threads=1",
    "progress=off",
]
TINY_SCHEDULE = CosineSchedule(
    0.003, 20, lr_min=0.00003, warmup_steps=5, cycle_mult=1.5, peak_decay=0.8, max_cycles=3
)


def cli_args(config: TrainConfig) -> list[str]:
    """The same config as ``python -m training train`` flags (for subprocess runs)."""
    args = ["--run-name", str(config.run_name), "--output-dir", str(config.output_dir)]
    for item in TINY:
        args += ["--set", item]
    if not config.mlflow.enabled:
        args.append("--no-mlflow")
    return args


def run_cli(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 300) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["model"]


def lr_trace(run_dir: Path) -> list[tuple[int, float]]:
    """(step, lr) for every committed step, in file order (duplicates kept)."""
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "lr" in record:
            out.append((record["step"], record["lr"]))
    return out


def metric_records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def version_1_checkpoint(config: TrainConfig, *, step: int = 30) -> tuple[Path, Any]:
    """What a job of before the stopping rule left behind: runs `config`'s job, kills it
    right after it wrote its step-`step` checkpoint, and rewrites that checkpoint as payload
    version 1 (no rule state). Returns the checkpoint's path and the rule state it held."""
    from training.engine.trainer import Trainer

    class Killed(Trainer):
        def _write_last(self) -> None:
            super()._write_last()
            if self.state.step == step:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Killed(config).run()
    path = Path(config.output_dir) / str(config.run_name) / "checkpoints" / "last.ckpt"
    data = load_checkpoint(path)
    data.pop("format")
    stopping = data.pop("stopping")
    save_checkpoint(path, {**data, "payload_version": 1})
    return path, stopping
