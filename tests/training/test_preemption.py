"""The job as a process: SIGKILL and SIGTERM at random points, resume, torchrun.

Each case compares with the same run never interrupted: the final weights must
be bit-identical and the lr trace must hold every step exactly once, in the
local metrics file and in MLflow.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.support import free_port
from tests.training.helpers import ROOT, TINY, final_weights, lr_trace, same_weights
from training.cli import EXIT_PREEMPTED
from training.cli.main import main
from training.config.train import TrainConfig
from training.engine.trainer import Trainer
from training.telemetry.recorder import read_metrics

Tiny = Callable[..., TrainConfig]

# four longer cycles (655 steps, about two seconds) and a checkpoint every 10 steps:
# many places to be killed
LONGER = ["schedule.max_cycles=4", "schedule.cycle_steps=80"]


def _train_cmd(run_name: str, out: Path, tracking_uri: str, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "training", "train", "--run-name", run_name]
    cmd += ["--output-dir", str(out), "--set", f"mlflow.tracking_uri={tracking_uri}"]
    for item in [*TINY, *LONGER]:
        cmd += ["--set", item]
    return cmd + list(extra)


def _wait_for_step(
    metrics: Path, step: int, proc: subprocess.Popen[str], timeout: float = 120
) -> None:
    """Until the run has committed ``step`` (metrics are committed with each
    checkpoint, every 10 steps), the process ends, or the timeout passes."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        records = read_metrics(metrics)
        if records and max(r["step"] for r in records) >= step:
            return
        time.sleep(0.005)


def _mlflow_lr_steps(tracking_uri: str, run_id: str) -> list[int]:
    from mlflow import MlflowClient

    return sorted(m.step for m in MlflowClient(tracking_uri).get_metric_history(run_id, "lr"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The uninterrupted run (same process flags as the killed ones)."""
    out = tmp_path_factory.mktemp("reference")
    uri = f"sqlite:///{out / 'mlflow.db'}"
    proc = subprocess.run(
        _train_cmd("ref", out, uri), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "ref", uri


def test_sigterm_then_sigkills_at_random_points_then_resume_equals_uninterrupted(
    reference: tuple[Path, str], tmp_path: Path
) -> None:
    """SIGTERM (clean preemption, exit 75), then two SIGKILLs at random moments,
    then a resume that runs to the end."""
    ref_dir, _ = reference
    seed = int(os.environ.get("PREEMPT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    metrics = tmp_path / "victim" / "metrics.jsonl"
    signals = [signal.SIGTERM, signal.SIGKILL, signal.SIGKILL]
    # the signal goes out at a random step (a later one each time; the run has
    # 655), then a random moment within the next checkpoint interval
    target = 0
    for attempt, sig in enumerate(signals):
        target += rng.randint(10, 150)
        extra = ["--resume"] if attempt else []
        proc = subprocess.Popen(
            _train_cmd("victim", tmp_path, uri, *extra),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        _wait_for_step(metrics, target, proc)
        time.sleep(rng.uniform(0.0, 0.05))
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {sig.name} at step {target} (seed {seed})")
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=120)
        if sig == signal.SIGTERM:
            assert proc.returncode == EXIT_PREEMPTED, f"seed {seed}: {output[-3000:]}"
            assert "preempted" in output
            assert "SIGTERM at step" in output
        else:
            assert proc.returncode == -signal.SIGKILL
    final = subprocess.run(
        _train_cmd("victim", tmp_path, uri, "--resume"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert final.returncode == 0, f"seed {seed}: {final.stderr[-3000:]}"
    run_dir = tmp_path / "victim"
    assert same_weights(final_weights(run_dir), final_weights(ref_dir)), f"seed {seed}"
    assert lr_trace(run_dir) == lr_trace(ref_dir), f"seed {seed}"
    # MLflow got every step exactly once, despite the crashes
    run_id = json.loads((run_dir / "result.json").read_text())["mlflow_run_id"]
    assert _mlflow_lr_steps(uri, run_id) == [s for s, _ in lr_trace(ref_dir)]


def test_torchrun_two_processes_follow_the_same_schedule(tiny: Tiny, tmp_path: Path) -> None:
    single = Trainer(tiny("model.dropout=0", name="single")).run()
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    cmd += [f"--master_port={free_port()}", "-m", "training", "train", "--run-name", "ddp"]
    cmd += ["--output-dir", str(out), "--no-mlflow", "--set", "model.dropout=0"]
    for item in TINY:
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "world_size" in (out / "ddp" / "result.json").read_text()
    result = json.loads((out / "ddp" / "result.json").read_text())
    assert result["world_size"] == 2
    # only rank 0 writes: one metrics file, one record per step
    assert lr_trace(out / "ddp") == lr_trace(Path(single.run_dir))
    w_ddp, w_one = final_weights(out / "ddp"), final_weights(Path(single.run_dir))
    for k in w_one:  # the same global batch split over two ranks; gradients averaged
        assert torch.allclose(w_ddp[k], w_one[k], atol=5e-5), k


def test_resume_refuses_a_changed_config(tiny: Tiny, capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny("schedule.max_cycles=1")
    Trainer(config).run()
    args = ["train", "--run-name", "tiny", "--output-dir", str(config.output_dir), "--no-mlflow"]
    for item in [*TINY, "schedule.max_cycles=1", "model.hidden=[64]"]:
        args += ["--set", item]
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "model.hidden: saved [32], now [64]" in err
    assert "Traceback" not in err
