"""Cycle-aware stopping: the rule on known sequences, its state in the checkpoint, the
job that stops (result.json, MLflow, the curves plot, health) and a resumed stop.

The tiny job (tests/training/helpers.py) has cycles ending at steps 24, 54 and 99.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.support import start_until_paused
from tests.training.helpers import (
    ROOT,
    TINY,
    TINY_SCHEDULE,
    final_weights,
    metric_records,
    same_weights,
    version_1_checkpoint,
)
from training.checkpoint.files import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from training.checkpoint.payload import PAYLOAD_VERSION, BestPayload, LastPayload
from training.config.train import ConfigError, StoppingConfig, TrainConfig, load_config
from training.engine.stopping import StopRule, StopState
from training.engine.trainer import Trainer
from training.results import TrainResult
from training.telemetry.health import diagnose

Tiny = Callable[..., TrainConfig]

# a cycle after the first can never win by 0.5 AUC: patience 1 stops after cycle 1
STOP_AFTER_1 = ["stopping.enabled=true", "stopping.min_delta=0.5", "stopping.patience=1"]


def _decide(scores: list[float], metric: str = "val_auc", **cfg: Any) -> list[str]:
    rule = StopRule(StoppingConfig(enabled=True, **cfg), metric)
    state, out = StopState(), []
    for cycle, score in enumerate(scores):
        d = rule.observe(state, cycle, 100 * cycle, score, is_last=cycle == len(scores) - 1)
        out.append(d.action)
        if d.action == "stop":
            break
    return out


class TestRule:
    def test_a_cycle_that_does_not_beat_the_best_by_min_delta_stops_the_run(self) -> None:
        # 0.705 beats 0.700 by 0.005 > 0.002: a win; 0.706 beats 0.705 by 0.001: no win
        assert _decide([0.700, 0.705, 0.706, 0.72], min_delta=0.002) == [
            "continue",
            "continue",
            "stop",
        ]

    def test_patience_counts_cycles_in_a_row_and_a_win_resets_it(self) -> None:
        scores = [0.70, 0.69, 0.71, 0.705, 0.709, 0.8]
        # c1 no win (1), c2 wins (0), c3 no win (1), c4 no win (2): stop after cycle 4
        assert _decide(scores, patience=2) == ["continue"] * 4 + ["stop"]
        assert _decide(scores, patience=3) == ["continue"] * 5 + ["last"]

    def test_the_last_cycle_is_never_a_stop(self) -> None:
        assert _decide([0.7, 0.6]) == ["continue", "last"]

    def test_min_cycles_holds_the_rule_back(self) -> None:
        assert _decide([0.7, 0.6, 0.6, 0.6], min_cycles=3) == ["continue", "continue", "stop"]

    def test_val_loss_is_better_when_lower(self) -> None:
        assert _decide([0.50, 0.49, 0.495, 0.3], metric="val_loss") == [
            "continue",
            "continue",
            "stop",
        ]

    def test_a_nan_best_never_wins(self) -> None:
        assert _decide([0.7, math.nan, 0.9]) == ["continue", "stop"]
        assert _decide([math.nan, 0.7, 0.6, 0.9]) == ["continue", "continue", "stop"]

    def test_disabled_decides_but_never_stops(self) -> None:
        rule, state = StopRule(StoppingConfig(enabled=False), "val_auc"), StopState()
        actions = [rule.observe(state, c, c, 0.7 - c / 10, is_last=False).action for c in range(4)]
        assert actions == ["continue"] * 4
        assert state.streak == 3
        assert not state.stopped

    def test_the_streak_that_stopped_the_run_is_named(self) -> None:
        rule, state = StopRule(StoppingConfig(enabled=True, patience=2), "val_auc"), StopState()
        for c, score in enumerate([0.7, 0.8, 0.75, 0.79]):
            rule.observe(state, c, c, score, is_last=False)
        assert state.stopped
        assert state.losing_cycles == [2, 3]


class TestState:
    def test_round_trips_and_loads_strictly(self) -> None:
        rule, state = StopRule(StoppingConfig(enabled=True, patience=2), "val_auc"), StopState()
        for c, score in enumerate([0.7, 0.6]):
            rule.observe(state, c, c, score, is_last=False)
        assert StopState.from_dict(state.to_dict()) == state
        with pytest.raises(CheckpointError, match="stopping state version 9"):
            StopState.from_dict({**state.to_dict(), "version": 9})
        with pytest.raises(CheckpointError, match="does not fit this job"):
            StopState.from_dict({**state.to_dict(), "extra": 1})

    def test_config_errors_name_the_field(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"stopping\.patience"):
            load_config(None, ["stopping.patience=0"])
        with pytest.raises(ConfigError, match=r"stopping\.min_delta"):
            load_config(None, ["stopping.min_delta=-0.1"])
        with pytest.raises(ConfigError, match=r"stopping.*(pateince|patience)"):
            load_config(None, ["stopping.pateince=2"])

    def test_off_leaves_the_definition_hash_as_before_the_section_existed(self) -> None:
        off, on = load_config(None, []), load_config(None, ["stopping.enabled=true"])
        assert "stopping" not in off.definition()
        assert on.definition()["stopping"]["patience"] == 1
        assert off.definition_hash() != on.definition_hash()


# ---------------------------------------------------------------- the job


def _metrics(cycles: list[Any]) -> list[tuple[Any, ...]]:
    """A cycle best without its file (the checkpoint holds the run's name and config)."""
    return [(c.cycle, c.step, c.lr, c.val_auc, c.val_loss, c.final) for c in cycles]


@pytest.fixture
def stopped(tiny: Tiny) -> TrainResult:
    return Trainer(tiny(*STOP_AFTER_1, name="stopped")).run()


def test_the_job_stops_after_the_cycle_and_says_what_it_saved(
    tiny: Tiny, stopped: TrainResult
) -> None:
    fixed = Trainer(tiny(name="fixed")).run()
    assert fixed.steps_done == 100
    assert fixed.stopping is not None
    assert not fixed.stopping.stopped
    # the stopped run is the fixed run cut after cycle 1's last step (54)
    assert stopped.status == "completed"
    assert stopped.steps_done == 55
    assert [c.cycle for c in stopped.cycles] == [0, 1]
    assert _metrics(stopped.cycles) == _metrics(fixed.cycles)[:2]
    st = stopped.stopping
    assert st is not None
    assert st.stopped
    assert (st.stopped_after_cycle, st.stop_step, st.scheduled_steps) == (1, 54, 100)
    assert st.steps_saved == 45
    assert st.losing_cycles == [1]
    assert st.usd_saved == pytest.approx(45 * stopped.cost_usd / 55, rel=1e-6, abs=1e-8)
    assert stopped.stop_reason.startswith("stopped after cycle 1 (step 54)")
    on_disk = TrainResult.load(stopped.run_dir)
    assert on_disk == stopped
    assert max(r["step"] for r in metric_records(Path(stopped.run_dir))) == 54
    # the weights it ends with are the fixed run's at step 55 (both deterministic)
    ckpt = load_checkpoint(Path(stopped.run_dir) / "checkpoints" / "last.ckpt")
    assert ckpt["step"] == 55
    assert ckpt["payload_version"] == PAYLOAD_VERSION == 2
    assert StopState.from_dict(ckpt["stopping"]).stopped


def test_a_resume_after_the_stop_was_checkpointed_only_finishes(
    tiny: Tiny, stopped: TrainResult
) -> None:
    run_dir = Path(stopped.run_dir)
    before = final_weights(run_dir)
    (run_dir / "result.json").unlink()  # killed after the last checkpoint, before the result
    again = Trainer(tiny(*STOP_AFTER_1, name="stopped")).run(resume=True)
    assert again.steps_done == 55
    assert again.stopping is not None
    assert stopped.stopping is not None
    # the same decision; the cost per step now includes the resume's time
    assert replace(again.stopping, usd_per_step=0, usd_saved=0) == replace(
        stopped.stopping, usd_per_step=0, usd_saved=0
    )
    assert same_weights(final_weights(run_dir), before)


def test_a_version_1_checkpoint_resumes_with_its_state_replayed(tiny: Tiny, tmp_path: Path) -> None:
    """A checkpoint from before the state was stored: the rule is replayed over its
    closed cycles, so it decides as the uninterrupted run did."""
    config = tiny(*STOP_AFTER_1, "checkpoint.every_steps=30", name="old")
    reference = Trainer(tiny(*STOP_AFTER_1, name="reference")).run()

    path, stopping = version_1_checkpoint(config)  # killed after the step-30 checkpoint
    assert stopping["decisions"][0]["cycle"] == 0
    assert LastPayload.load(path).stopping is None
    resumed = Trainer(config).run(resume=True)
    assert resumed.steps_done == 55
    assert resumed.stopping is not None
    assert resumed.stopping.decisions == reference.stopping.decisions  # type: ignore[union-attr]
    assert same_weights(
        final_weights(Path(resumed.run_dir)), final_weights(Path(reference.run_dir))
    )


def test_payload_versions_old_best_loads_and_unknown_is_refused(
    stopped: TrainResult, tmp_path: Path
) -> None:
    best = load_checkpoint(Path(stopped.run_dir) / stopped.cycles[0].path)
    best.pop("format")
    old = tmp_path / "old-best.ckpt"
    save_checkpoint(old, {**best, "payload_version": 1})
    assert BestPayload.load(old).cycle == 0
    future = tmp_path / "future.ckpt"
    save_checkpoint(future, {**best, "payload_version": 3})
    with pytest.raises(CheckpointError, match="payload version 3; this job reads versions 1, 2"):
        BestPayload.load(future)
    last = load_checkpoint(Path(stopped.run_dir) / "checkpoints" / "last.ckpt")
    last.pop("format")
    with pytest.raises(CheckpointError, match=r"missing \['stopping'\]"):
        LastPayload.from_mapping({k: v for k, v in last.items() if k != "stopping"})


def test_the_curves_plot_marks_the_stop(
    stopped: TrainResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.telemetry.plots as plots
    from training.engine.run_info import plot_curves
    from training.schedule import CosineSchedule
    from training.telemetry.recorder import read_metrics

    seen: list[Any] = []
    real_save = plots._save
    monkeypatch.setattr(
        plots, "_save", lambda fig, path: (seen.append(fig), real_save(fig, path))[1]
    )
    run_dir = Path(stopped.run_dir)
    schedule = CosineSchedule(**stopped.schedule)
    plot_curves(read_metrics(run_dir / "metrics.jsonl"), schedule, [], run_dir / "c.png", "t", 54)
    marks = [
        line
        for ax in seen[0].axes
        for line in ax.get_lines()
        if line.get_label() == "stopped (rule)"
    ]
    assert len(marks) == 3
    assert all(list(m.get_xdata()) == [54, 54] for m in marks)
    assert (run_dir / "curves.png").stat().st_size > 0  # the job drew its own


def test_a_stopped_run_is_not_unhealthy_for_the_cycles_that_stopped_it() -> None:
    bests = [(0, 20, 0.72), (1, 50, 0.70), (2, 90, 0.69)]
    kinds = [f.kind for f in diagnose([], [], bests)]
    assert kinds == ["checkpoint_regression", "checkpoint_regression"]
    assert diagnose([], [], bests[:2], stopped_cycles=[1]) == []
    # a regression outside the streak that stopped the run is still reported
    found = diagnose([], [], bests, stopped_cycles=[2])
    assert [f.step for f in found] == [50]


def test_mlflow_gets_the_decision_and_the_savings(tiny: Tiny, mlflow_server: Any) -> None:
    from mlflow import MlflowClient

    result = Trainer(
        tiny(*STOP_AFTER_1, f"mlflow.tracking_uri={mlflow_server.url}", name="ml", mlflow=True)
    ).run()
    client = MlflowClient(mlflow_server.url)
    run = client.get_run(str(result.mlflow_run_id))
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["stopping.stopped"] == "true"
    assert tags["stopping.stopped_after_cycle"] == "1"
    assert tags["cycle_0_stopping"].startswith("continue: cycle 0 set the mark")
    assert tags["cycle_1_stopping"].startswith("stop: cycle 1's best val_auc")
    assert metrics["stopping_steps_saved"] == 45.0
    assert metrics["stopping_usd_saved"] == pytest.approx(result.stopping.usd_saved)  # type: ignore[union-attr]
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "result.json")).read_text())
    assert logged["stopping"]["steps_saved"] == 45


# ---------------------------------------------------------------- SIGKILL, then resume

# 4 cycles end at steps 24, 54, 99 and 166; a cycle never wins by 0.5 AUC, so patience 2
# stops the run after cycle 2 (step 99): the streak of cycle 1 must survive the kill
FOUR = ["schedule.max_cycles=4", *STOP_AFTER_1[:2], "stopping.patience=2"]
FOUR_CYCLES = replace(TINY_SCHEDULE, max_cycles=4)


def _cli(name: str, out: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "training", "train", "--run-name", name, "--output-dir", str(out)]
    for item in [*TINY, *FOUR]:
        cmd += ["--set", item]
    return [*cmd, "--no-mlflow", *extra]


def test_sigkill_after_a_cycle_end_then_resume_decides_the_same(tmp_path: Path) -> None:
    ref = subprocess.run(_cli("ref", tmp_path), cwd=ROOT, capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert "stopped after cycle 2 (step 99)" in ref.stdout + ref.stderr
    marker = tmp_path / "marker.jsonl"
    # evaluations at steps 9, 19, 24, 29, 39, 49, 54, 59, 69: the 9th is after cycle 1's
    # end (54) and the checkpoint at step 60; the job pauses there and is killed
    proc = start_until_paused(
        _cli("victim", tmp_path), marker, "evaluation@9:120", timeout=120, poll=0.02, cwd=ROOT
    )
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    victim = tmp_path / "victim"
    killed = load_checkpoint(victim / "checkpoints" / "last.ckpt")
    assert killed["step"] == 60
    assert not (victim / "result.json").exists()
    state = StopState.from_dict(killed["stopping"])
    assert [d.cycle for d in state.decisions] == [0, 1]
    assert state.streak == 1
    resumed = subprocess.run(
        _cli("victim", tmp_path, "--resume"), cwd=ROOT, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = TrainResult.load(victim), TrainResult.load(tmp_path / "ref")
    assert a.stopping is not None
    assert b.stopping is not None
    assert a.stopping.decisions == b.stopping.decisions
    # T0 20 x 1.5**3: the fourth cycle holds 68 steps (cycle ends snap to whole steps)
    assert FOUR_CYCLES.total_steps() == 168
    assert (a.steps_done, a.stopping.stopped_after_cycle, a.stopping.steps_saved) == (100, 2, 68)
    assert _metrics(a.cycles) == _metrics(b.cycles)
    assert same_weights(final_weights(victim), final_weights(tmp_path / "ref"))
