"""SIGKILL inside a step, an evaluation and a checkpoint write; torn checkpoint files.

The issue's requirement: the job is killed with SIGKILL at chosen points and
resumed; every time, the final weights and the lr trace equal a run that was
never interrupted, and no half-written checkpoint is ever loaded.

Kill points are not moments in time but places in the code: the job runs with
``COSINE_RETRAIN_FAULT_PAUSE=PHASE@N:SECONDS`` (training/checkpoint/files.py), which
pauses it the N-th time it passes PHASE and writes a marker line; the test
sees the marker and sends SIGKILL while the process is provably there. Each
job is a process of its own, forked by a multiprocessing fork server that has
imported the job's modules once (``python -m training`` would spend 15-40 s
of a loaded 2-core machine importing torch for every kill); it runs the same
``training.cli.main`` with the same arguments.

- ``step``: gradients computed, the optimizer update not applied yet;
- ``evaluation``: validation predictions made, nothing recorded yet;
- ``checkpoint-write``: half of the temporary file written, before the rename.

Quick mode kills once in each phase (3 kills); ``FAULTS=long`` kills 10 times
(4 steps, 3 evaluations, 3 checkpoint writes). N is drawn from a seed
(``FAULTS_SEED`` repeats a run; the seed is in every failure message). The
uninterrupted reference runs once per module, in this process, with the same
flags as the killed runs.

Then the files themselves: ``last.ckpt`` truncated, with a flipped byte,
empty, or gone (a crash between the two renames), and a stray temporary file
of an interrupted write: a resume falls back to ``last.prev`` (or ignores the
stray) and still ends bit-identical to the reference; with every generation
corrupt it refuses with one message that names each file and its checksum.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import multiprocessing.forkserver
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.faults.conftest import FaultMode
from tests.training.helpers import TINY, final_weights, lr_trace, same_weights
from training.checkpoint import files as ckpt_mod
from training.checkpoint.files import (
    FAULT_MARKER_ENV,
    FAULT_PAUSE_ENV,
    CheckpointError,
    load_checkpoint,
    load_latest,
)
from training.cli.main import main
from training.engine.trainer import Trainer

# four cycles, 655 steps, an evaluation and a checkpoint every 10 steps
ARGS = [*TINY, "schedule.max_cycles=4", "schedule.cycle_steps=80"]
TOTAL_STEPS = 655
PAUSE_S = 120  # the killed job sleeps this long at the fault point; SIGKILL comes first
MARKER_TIMEOUT_S = 180.0


def _argv(run_name: str, out: Path, *extra: str) -> list[str]:
    argv = ["train", "--run-name", run_name, "--output-dir", str(out), "--no-mlflow"]
    for item in ARGS:
        argv += ["--set", item]
    return argv + list(extra)


def _models(run_dir: Path) -> dict[str, dict]:
    """The model of ``last`` and of every best-of-cycle checkpoint, by file name."""
    ckpts = run_dir / "checkpoints"
    names = ["last.ckpt", *sorted(p.name for p in ckpts.glob("best-cycle-*.ckpt"))]
    return {name: load_checkpoint(ckpts / name)["model"] for name in names}


def _assert_equals_reference(run_dir: Path, ref_dir: Path, context: str) -> None:
    result = json.loads((run_dir / "result.json").read_text())
    assert result["status"] == "completed", context
    assert result["steps_done"] == TOTAL_STEPS, context
    assert lr_trace(run_dir) == lr_trace(ref_dir), f"lr trace differs ({context})"
    ours, ref = _models(run_dir), _models(ref_dir)
    assert ours.keys() == ref.keys(), context
    for name in ref:
        assert same_weights(ours[name], ref[name]), f"{name} differs ({context})"
    stray = sorted(p.name for p in (run_dir / "checkpoints").glob(f".*{ckpt_mod.TMP_INFIX}*"))
    assert stray == [], f"temporary files of killed writes were left behind: {stray}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run never interrupted (same flags as the killed ones, in this process)."""
    out = tmp_path_factory.mktemp("reference")
    assert main(_argv("ref", out)) == 0
    assert final_weights(out / "ref")  # it finished and its last checkpoint verifies
    return out / "ref"


# ============================================================== SIGKILL at chosen places


@dataclass(frozen=True)
class Kill:
    phase: str  # step | evaluation | checkpoint-write
    nth: int  # the N-th time this process passes the phase (1-based)

    @property
    def spec(self) -> str:
        return f"{self.phase}@{self.nth}:{PAUSE_S}"


def _plan(mode: FaultMode, rng: random.Random) -> list[Kill]:
    """Kills in the three phases, interleaved. Each process may advance at most
    ``cap`` steps, so the run cannot finish before the last kill."""
    count = int(mode.pick(3, 10))
    phases = ["step", "evaluation", "checkpoint-write"] * 4
    cap = (TOTAL_STEPS - 55) // count  # 200 steps a process in quick mode, 60 in long
    plan = []
    for phase in phases[:count]:
        # evaluations and `last` writes come every 10 steps (plus cycle ends, best
        # checkpoints and the step-0 write of a fresh run)
        top = cap if phase == "step" else max(1, cap // 10)
        plan.append(Kill(phase, rng.randint(1, top)))
    return plan


@pytest.fixture(scope="module")
def forkserver() -> multiprocessing.context.ForkServerContext:
    """A fork server that has imported the job's modules: each job forks from it
    with torch imported but never run, so no thread pool is copied mid-use."""
    ctx = multiprocessing.get_context("forkserver")
    # torch._inductor: use_deterministic_algorithms imports it (seconds) in every job
    modules = [
        "training.cli.main",
        "training.engine.trainer",
        "training.data.dataset",
        "training.telemetry.plots",
    ]
    ctx.set_forkserver_preload([*modules, "torch._inductor", "matplotlib.pyplot"])
    # start it now: it imports while the reference runs here (this returns at once)
    multiprocessing.forkserver.ensure_running()
    return ctx


def _job(argv: list[str], env: dict[str, str], log_path: str) -> None:
    """The child: ``python -m training`` minus the interpreter start."""
    os.environ.update(env)
    ckpt_mod._fault = ckpt_mod._fault_from_env()  # imported in the server, before env
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    sys.exit(main(argv))


def _durable_step(ckpts: Path) -> int | None:
    """The step a resume would start from; None when nothing durable exists yet
    (the first process was killed inside its step-0 write: the next starts afresh)."""
    try:
        return load_latest(ckpts / "last.ckpt")[0]["step"]
    except CheckpointError:
        return None


def _wait_for_marker(marker: Path, proc: multiprocessing.process.BaseProcess) -> dict | None:
    deadline = time.monotonic() + MARKER_TIMEOUT_S
    while time.monotonic() < deadline and proc.is_alive():
        if marker.exists() and marker.read_text().endswith("\n"):
            return json.loads(marker.read_text().splitlines()[-1])
        time.sleep(0.01)
    return None


def test_sigkill_mid_step_mid_evaluation_mid_checkpoint_write_then_resume_equals_uninterrupted(
    forkserver: multiprocessing.context.ForkServerContext,
    reference: Path,
    fault_mode: FaultMode,
    tmp_path: Path,
    record_property: pytest.RecordProperty,
) -> None:
    seed = int(os.environ.get("FAULTS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    plan = _plan(fault_mode, rng)
    run_dir = tmp_path / "victim"
    ckpts = run_dir / "checkpoints"
    started = time.monotonic()
    tally: dict[str, int] = {}
    seconds = []
    resumes = 1  # the last one, below
    for attempt, kill in enumerate(plan):
        where = f"seed {seed}, kill {attempt + 1}/{len(plan)} {kill.spec}"
        durable = _durable_step(ckpts)
        marker = tmp_path / f"marker-{attempt}.jsonl"
        log_path = tmp_path / f"attempt-{attempt}.log"
        env = {FAULT_PAUSE_ENV: kill.spec, FAULT_MARKER_ENV: str(marker)}
        argv = _argv("victim", tmp_path, "--resume-if-present")
        proc = forkserver.Process(target=_job, args=(argv, env, str(log_path)))
        t0 = time.monotonic()
        proc.start()
        try:
            hit = _wait_for_marker(marker, proc)
            if hit is None:
                output = log_path.read_text() if log_path.exists() else ""
                pytest.fail(f"never reached the fault point ({where}):\n{output}")
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(timeout=60)
            assert proc.exitcode == -signal.SIGKILL, where
            seconds.append(round(time.monotonic() - t0, 1))
        finally:
            if proc.is_alive():
                proc.kill()
                proc.join()
        output = log_path.read_text()
        assert (hit["phase"], hit["occurrence"], hit["pid"]) == (kill.phase, kill.nth, proc.pid)
        if durable is not None:  # it resumed from the newest good checkpoint, nothing else
            resumes += 1
            assert f"resumed victim at step {durable}" in output, f"{where}:\n{output}"
        assert "Traceback" not in output, f"{where}:\n{output}"
        label = kill.phase
        if kill.phase == "checkpoint-write":
            # the write was killed halfway: its temporary file is torn and refused
            target = Path(hit["detail"])
            label += f" ({'last' if target.name == 'last.ckpt' else 'best'})"
            torn = target.with_name(f".{target.name}{ckpt_mod.TMP_INFIX}{proc.pid}")
            assert torn.exists(), where
            with pytest.raises(CheckpointError, match="checksum does not match"):
                load_checkpoint(torn)
        else:
            # nothing of the killed step or evaluation became durable
            assert (_durable_step(ckpts) or 0) <= int(hit["detail"]), where
        tally[label] = tally.get(label, 0) + 1

    # the last resume runs to the end (in this process: no kill is planned)
    assert main(_argv("victim", tmp_path, "--resume-if-present")) == 0
    elapsed = time.monotonic() - started
    _assert_equals_reference(run_dir, reference, f"seed {seed}, plan {[k.spec for k in plan]}")
    summary = {
        "seed": seed,
        "plan": [k.spec for k in plan],
        "kills": tally,
        "resumes": resumes,
        "final_equals_reference": True,
        "seconds_per_kill": seconds,
        "seconds": round(elapsed, 1),
    }
    record_property("preemption_faults", json.dumps(summary))
    print(f"preemption faults: {json.dumps(summary)}")


# ============================================================== torn and corrupt files


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run stopped at step 600 (in its fourth cycle) as a SIGTERM would
    stop it: ``last`` at 600, ``last.prev`` at 590, metrics committed up to 599.
    Deterministic, so every damaged copy starts from the same files."""
    out = tmp_path_factory.mktemp("stopped")
    real = Trainer._stop_requested

    def stop_at_600(self: Trainer) -> str | None:
        return "preempted" if self.state.step >= 600 else real(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_stop_requested", stop_at_600)
        assert main(_argv("victim", out)) == 75
    ckpts = out / "victim" / "checkpoints"
    assert load_checkpoint(ckpts / "last.ckpt")["step"] == 600
    assert load_checkpoint(ckpts / "last.prev.ckpt")["step"] == 590
    return out / "victim"


def _copy(stopped: Path, tmp_path: Path) -> Path:
    run_dir = tmp_path / "victim"
    shutil.copytree(stopped, run_dir)
    return run_dir


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "truncated-half": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
    "truncated-in-header": (lambda p: p.write_bytes(p.read_bytes()[:40])),
    "byte-flipped": (lambda p: _flip(p, -100)),
    "checksum-flipped": (lambda p: _flip(p, len(ckpt_mod.MAGIC) + 3)),
    "empty": (lambda p: p.write_bytes(b"")),
    "gone": (lambda p: p.unlink()),  # killed between the two renames of a write
}
MESSAGES = {
    "truncated-half": "checksum does not match",
    "truncated-in-header": "checksum does not match",
    "byte-flipped": "checksum does not match",
    "checksum-flipped": "checksum does not match",
    "empty": "empty file",
    "gone": "does not exist",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_last_checkpoint_is_never_loaded(
    damage: str,
    stopped: Path,
    reference: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    run_dir = _copy(stopped, tmp_path)
    last = run_dir / "checkpoints" / "last.ckpt"
    DAMAGE[damage](last)
    caplog.set_level(logging.INFO)
    assert main(_argv("victim", tmp_path, "--resume")) == 0
    # the warning names the file and what is wrong with it, then the fallback
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    fallback = [w for w in warnings if "last.prev.ckpt instead" in w]
    assert len(fallback) == 1, warnings
    assert str(last) in fallback[0], fallback[0]
    assert MESSAGES[damage] in fallback[0], fallback[0]
    assert "resumed victim at step 590" in caplog.text
    # steps 590..599 ran again, and the metrics file still holds each step once
    _assert_equals_reference(run_dir, reference, damage)


def test_a_stray_temporary_file_is_never_loaded(
    stopped: Path, reference: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An interrupted write's temporary file next to a good ``last``: a complete
    one (killed just before the rename; it holds the finished step-655 state, so
    loading it would skip 55 steps) and a torn one."""
    run_dir = _copy(stopped, tmp_path)
    ckpts = run_dir / "checkpoints"
    dead = [subprocess.Popen(["true"]) for _ in range(2)]  # pids of processes gone
    for proc in dead:
        proc.wait()
    finished = (reference / "checkpoints" / "last.ckpt").read_bytes()
    (ckpts / f".last.ckpt{ckpt_mod.TMP_INFIX}{dead[0].pid}").write_bytes(finished)
    (ckpts / f".last.ckpt{ckpt_mod.TMP_INFIX}{dead[1].pid}").write_bytes(finished[:9000])
    caplog.set_level(logging.INFO)
    assert main(_argv("victim", tmp_path, "--resume")) == 0
    assert "resumed victim at step 600" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    _assert_equals_reference(run_dir, reference, "stray temporary files")


def test_every_generation_corrupt_is_refused_with_the_files_and_checksums_named(
    stopped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = _copy(stopped, tmp_path)
    ckpts = run_dir / "checkpoints"
    DAMAGE["truncated-half"](ckpts / "last.ckpt")
    DAMAGE["byte-flipped"](ckpts / "last.prev.ckpt")
    before = {p.name: p.read_bytes() for p in ckpts.iterdir()}
    metrics_before = (run_dir / "metrics.jsonl").read_bytes()
    assert main(_argv("victim", tmp_path, "--resume")) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error: no usable checkpoint" in err, err
    for name in ("last.ckpt", "last.prev.ckpt"):
        assert str(ckpts / name) in err
    assert err.count("checksum does not match") == 2
    assert err.count("the header says sha256") == 2
    # nothing was touched: the files stay for a person to look at
    assert {p.name: p.read_bytes() for p in ckpts.iterdir()} == before
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics_before


# ============================================================== the fault hook itself


def test_the_fault_hook_is_off_unless_its_variable_is_set() -> None:
    if not os.environ.get(FAULT_PAUSE_ENV):
        assert ckpt_mod._fault is None


def test_the_fault_hook_pauses_once_at_the_nth_pass_and_writes_a_marker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "marker.jsonl"
    monkeypatch.setenv(FAULT_MARKER_ENV, str(marker))
    fault = ckpt_mod._FaultPause("evaluation@3:0.2")
    monkeypatch.setattr(ckpt_mod, "_fault", fault)
    paused = []
    for i in range(6):
        ckpt_mod.fault_point("step", str(i))  # another phase: not counted
        t = time.monotonic()
        ckpt_mod.fault_point("evaluation", str(i))
        paused.append(time.monotonic() - t >= 0.2)
    assert paused == [False, False, True, False, False, False]
    lines = [json.loads(line) for line in marker.read_text().splitlines()]
    assert lines == [{"phase": "evaluation", "occurrence": 3, "pid": os.getpid(), "detail": "2"}]


@pytest.mark.parametrize(
    "spec", ["evaluation", "evaluation@0:1", "eval@1:1", "step@x:1", "step@1:-1", "step@1:1:2"]
)
def test_a_malformed_fault_spec_is_refused_with_its_format(spec: str) -> None:
    with pytest.raises(ValueError, match=f"{FAULT_PAUSE_ENV}=.*PHASE@N:SECONDS"):
        ckpt_mod._FaultPause(spec)


def test_a_fallback_to_the_older_checkpoint_sends_mlflow_no_step_twice(tmp_path: Path) -> None:
    """MLflow got steps up to 599 before the stop; the resume falls back to
    ``last.prev`` (590) and runs 590..599 again: MLflow must keep each step once."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = [a for a in _argv("victim", tmp_path) if a != "--no-mlflow"]
    argv += ["--set", f"mlflow.tracking_uri={uri}"]
    real = Trainer._stop_requested

    def stop_at_600(self: Trainer) -> str | None:
        return "preempted" if self.state.step >= 600 else real(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Trainer, "_stop_requested", stop_at_600)
        assert main(argv) == 75
    run_dir = tmp_path / "victim"
    run_id = json.loads((run_dir / "result.json").read_text())["mlflow_run_id"]
    client = MlflowClient(uri)
    assert max(m.step for m in client.get_metric_history(run_id, "lr")) == 599
    (run_dir / "checkpoints" / "last.ckpt").unlink()  # resume from last.prev (590)
    assert main([*argv, "--resume"]) == 0
    steps = sorted(m.step for m in client.get_metric_history(run_id, "lr"))
    assert steps == list(range(TOTAL_STEPS))
    # the run's cost still arrives at the end (a record at an already-sent step)
    assert client.get_run(run_id).data.metrics["cost_usd"] > 0
