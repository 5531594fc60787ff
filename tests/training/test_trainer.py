"""The training loop, in process: determinism, best-per-cycle, NaN guard,
gradient accumulation, budget, optimizer options."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from tests.training.helpers import (
    TINY_SCHEDULE,
    final_weights,
    lr_trace,
    metric_records,
    same_weights,
)
from training.checkpoint.files import load_checkpoint
from training.config.train import TrainConfig
from training.data.dataset import PreparedData, prepare
from training.data.preprocess import Preprocessor
from training.data.spec import DatasetSpec, load_spec
from training.engine.nan_guard import TrainingDiverged
from training.engine.trainer import Trainer
from training.model.network import TabularMLP
from training.results import TrainResult
from training.schedule import CosineSchedule

Tiny = Callable[..., TrainConfig]


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tiny: Tiny) -> None:
    a = Trainer(tiny(name="a")).run()
    b = Trainer(tiny(name="b")).run()
    c = Trainer(tiny("runtime.seed=7", name="c")).run()
    wa, wb, wc = (final_weights(Path(r.run_dir)) for r in (a, b, c))
    assert same_weights(wa, wb)
    assert not same_weights(wa, wc)
    assert lr_trace(Path(a.run_dir)) == lr_trace(Path(b.run_dir))


def test_lr_trace_is_the_schedule_at_every_step(tiny: Tiny) -> None:
    result = Trainer(tiny()).run()
    trace = lr_trace(Path(result.run_dir))
    assert [s for s, _ in trace] == list(range(100))
    for step, lr in trace:
        assert lr == pytest.approx(TINY_SCHEDULE.lr_at(step), rel=1e-12, abs=0)
    assert result.status == "completed"
    assert result.steps_done == 100
    assert result.schedule["cycle_steps"] == 20


def test_each_cycle_keeps_its_true_best_checkpoint(tiny: Tiny) -> None:
    # a high peak makes validation AUC peak mid-cycle, so "best" is not just "last"
    config = tiny("eval.every_steps=5", "schedule.lr_max=0.03")
    result = Trainer(config).run()
    run_dir = Path(result.run_dir)
    # the evaluations actually made, grouped by the cycle the schedule puts them in
    by_cycle: dict[int, list[dict]] = defaultdict(list)
    for r in metric_records(run_dir):
        if "val_auc" in r:
            by_cycle[TINY_SCHEDULE.cycle_of(r["step"])].append(r)
    assert sorted(by_cycle) == [0, 1, 2]
    assert [c.cycle for c in result.cycles] == [0, 1, 2]
    # every cycle end is evaluated (that is where a cycle's best is decided last)
    for end in TINY_SCHEDULE.cycle_end_steps():
        assert any(r["step"] == end for r in by_cycle[TINY_SCHEDULE.cycle_of(end)])

    assert any(
        best.step != max(r["step"] for r in by_cycle[best.cycle]) for best in result.cycles
    ), "precondition: some cycle's best must come before its last evaluation"

    spec = load_spec(config.data.dataset)
    data = prepare(config.data, spec)
    for best in result.cycles:
        evals = by_cycle[best.cycle]
        top = max(evals, key=lambda r: r["val_auc"])
        assert best.step == top["step"]
        assert best.val_auc == pytest.approx(top["val_auc"], abs=1e-12)
        # reload the file and score it independently (sklearn) on the validation rows
        ckpt = load_checkpoint(run_dir / best.path)
        assert ckpt["kind"] == "best"
        assert ckpt["cycle"] == best.cycle
        assert ckpt["step"] == best.step
        hot = CosineSchedule(
            0.03, 20, lr_min=3e-5, warmup_steps=5, cycle_mult=1.5, peak_decay=0.8, max_cycles=3
        )
        assert ckpt["lr"] == pytest.approx(hot.lr_at(best.step), rel=1e-12)
        model = TabularMLP.from_signature(ckpt["model_signature"])
        model.load_state_dict(ckpt["model"])
        model.eval()
        pre = Preprocessor.from_state(ckpt["preprocessor"])
        cats, nums = pre.transform(data.valid_frame)
        with torch.no_grad():
            logits = model(torch.from_numpy(cats), torch.from_numpy(nums)).double().numpy()
        prob = 1 / (1 + np.exp(-logits))
        assert roc_auc_score(data.valid.y, prob) == pytest.approx(best.val_auc, abs=1e-6)
        assert sk_log_loss(data.valid.y, prob) == pytest.approx(best.val_loss, abs=1e-5)


def test_a_later_cycle_never_overwrites_an_earlier_best(tiny: Tiny) -> None:
    result = Trainer(tiny()).run()
    run_dir = Path(result.run_dir)
    paths = [run_dir / c.path for c in result.cycles]
    assert len(set(paths)) == 3
    for c, path in zip(result.cycles, paths, strict=True):
        header = path.read_bytes().split(b"\n", 2)[1].decode()
        assert header == c.sha256, "the best file changed after its cycle recorded it"


def test_nan_steps_are_skipped_and_counted(tiny: Tiny) -> None:
    result = Trainer(tiny("fault_injection.nan_steps=[7, 31, 32]")).run()
    records = {r["step"]: r for r in metric_records(Path(result.run_dir)) if "lr" in r}
    assert result.status == "completed"
    assert result.nan_count == 3
    assert result.rollbacks == 0
    for s in (7, 31, 32):
        assert math.isnan(records[s]["train_loss"])
    assert records[6]["nan_count"] == 0
    assert records[7]["nan_count"] == 1
    assert records[99]["nan_count"] == 3
    weights = final_weights(Path(result.run_dir))
    assert all(torch.isfinite(t).all() for t in weights.values())
    # the rate keeps following the schedule through skipped steps
    assert records[32]["lr"] == pytest.approx(TINY_SCHEDULE.lr_at(32), rel=1e-12)


def test_a_skipped_step_leaves_weights_and_optimizer_untouched(tiny: Tiny) -> None:
    """Stop right after a poisoned step: the model equals the one stopped just before it."""
    before = Trainer(tiny("schedule.max_cycles=null", "schedule.max_steps=12", name="b")).run()
    after = Trainer(
        tiny(
            "schedule.max_cycles=null",
            "schedule.max_steps=13",
            "fault_injection.nan_steps=[12]",
            name="a",
        )
    ).run()
    wb = load_checkpoint(Path(before.run_dir) / "checkpoints" / "last.ckpt")
    wa = load_checkpoint(Path(after.run_dir) / "checkpoints" / "last.ckpt")
    assert wa["step"] == 13
    assert wb["step"] == 12
    assert after.nan_count == 1
    assert same_weights(wa["model"], wb["model"])
    for sa, sb in zip(
        wa["optimizer"]["state"].values(), wb["optimizer"]["state"].values(), strict=True
    ):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])


def test_repeated_nans_roll_back_with_a_lowered_peak(tiny: Tiny) -> None:
    # NaN whenever lr > 2.5e-3: near the first peak; after one rollback the peak is 1.5e-3
    config = tiny("fault_injection.nan_above_lr=0.0025", "nan_guard.max_consecutive=3")
    result = Trainer(config).run()
    assert result.status == "completed"
    assert result.rollbacks == 1
    assert result.lr_scale == 0.5
    assert result.nan_count >= 3
    trace = lr_trace(Path(result.run_dir))
    steps = [s for s, _ in trace]
    assert steps == sorted(set(steps)) == list(range(100)), "each step committed exactly once"
    late = dict(trace)
    for s in (40, 60, 99):
        assert late[s] == pytest.approx(0.5 * TINY_SCHEDULE.lr_at(s), rel=1e-12)
    for best in result.cycles:
        assert math.isfinite(best.val_auc)
        ckpt = load_checkpoint(Path(result.run_dir) / best.path)
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values())


def test_gives_up_with_a_clear_error_when_rollbacks_do_not_help(tiny: Tiny) -> None:
    config = tiny(
        "fault_injection.nan_steps=[20, 21, 22, 23, 24, 25]",
        "nan_guard.max_consecutive=2",
        "nan_guard.max_rollbacks=1",
    )
    with pytest.raises(TrainingDiverged, match=r"consecutive non-finite steps.*1 rollback"):
        Trainer(config).run()
    best_dir = Path(config.output_dir) / "tiny" / "checkpoints"
    for path in best_dir.glob("best-*.ckpt"):
        ckpt = load_checkpoint(path)
        assert all(torch.isfinite(t).all() for t in ckpt["model"].values())


class _DeviceSkipTrainer(Trainer):
    """The accelerator's code path on the CPU: the skip decided on the device (the
    optimizer's ``found_inf``), the values read once per window."""

    def _build(self, spec: DatasetSpec, data: PreparedData) -> None:
        super()._build(spec, data)
        self.runner.host_checks = False


@pytest.mark.parametrize(
    "faults",
    [
        ("fault_injection.nan_steps=[7, 31, 32]",),
        ("fault_injection.nan_above_lr=0.0025", "nan_guard.max_consecutive=3"),
        ("optim.grad_accum_steps=2", "fault_injection.nan_steps=[12]", "optim.name=sgd"),
    ],
    ids=["skips", "rollback", "accum-sgd"],
)
def test_device_side_skip_equals_the_host_decided_skip(tiny: Tiny, faults: tuple[str, ...]) -> None:
    """On the CPU the job decides a step's skip on the host; on an accelerator on the
    device, without a sync. Both must give the same run to the bit."""
    host = Trainer(tiny(*faults, name="host")).run()
    device = _DeviceSkipTrainer(tiny(*faults, name="device")).run()
    assert host.nan_count == device.nan_count > 0
    assert host.rollbacks == device.rollbacks
    picks = ("cycle", "step", "val_auc", "val_loss")
    assert [[getattr(c, k) for k in picks] for c in host.cycles] == [
        [getattr(c, k) for k in picks] for c in device.cycles
    ]
    assert same_weights(final_weights(Path(host.run_dir)), final_weights(Path(device.run_dir)))
    keys = ("step", "lr", "train_loss", "grad_norm", "nan_count")

    def steps(result: TrainResult) -> list[tuple[float, ...]]:
        records = metric_records(Path(result.run_dir))
        return [tuple(r[k] for k in keys) for r in records if "lr" in r]

    a, b = steps(host), steps(device)
    assert len(a) == len(b) >= 100
    for ra, rb in zip(a, b, strict=True):  # NaN != NaN: compare as strings
        assert [repr(x) for x in ra] == [repr(x) for x in rb]


def test_gradient_accumulation_keeps_the_step_count_and_the_result(tiny: Tiny) -> None:
    common = ("model.dropout=0", "schedule.max_cycles=1")
    one = Trainer(tiny(*common, name="one")).run()
    four = Trainer(tiny(*common, "optim.grad_accum_steps=4", name="four")).run()
    assert one.steps_done == four.steps_done == 25
    assert lr_trace(Path(one.run_dir)) == lr_trace(Path(four.run_dir))
    w1, w4 = final_weights(Path(one.run_dir)), final_weights(Path(four.run_dir))
    for k in w1:  # same global batch per step; only the summation order differs
        assert torch.allclose(w1[k], w4[k], atol=2e-5), k


def test_budget_stops_cleanly_with_a_checkpoint(tiny: Tiny) -> None:
    # $3600/h = $1/s: a $0.5 budget is spent in half a second
    config = tiny(
        "cost.cpu_usd_per_hour=3600", "cost.budget_usd=0.5", "schedule.max_cycles=30", name="b"
    )
    result = Trainer(config).run()
    assert result.status == "budget_exhausted"
    assert "budget" in result.stop_reason
    assert 0 < result.steps_done < result.total_steps
    assert result.cost_usd >= 0.5
    last = load_checkpoint(Path(result.run_dir) / "checkpoints" / "last.ckpt")
    assert last["step"] == result.steps_done
    records = metric_records(Path(result.run_dir))
    assert any("cost_usd" in r for r in records)


def test_reset_moments_at_restart(tiny: Tiny) -> None:
    # stop exactly at the first restart (step 25): the moments were just reset
    common = ("schedule.max_cycles=null", "schedule.max_steps=25")
    kept = Trainer(tiny(*common, name="kept")).run()
    reset = Trainer(tiny(*common, "optim.reset_moments_at_restart=true", name="reset")).run()
    s_kept = load_checkpoint(Path(kept.run_dir) / "checkpoints" / "last.ckpt")["optimizer"]
    s_reset = load_checkpoint(Path(reset.run_dir) / "checkpoints" / "last.ckpt")["optimizer"]
    assert any(bool(st["exp_avg"].abs().sum() > 0) for st in s_kept["state"].values())
    for st in s_reset["state"].values():
        assert not st["exp_avg"].any()
        assert not st["exp_avg_sq"].any()


@pytest.mark.parametrize("steps", [25, 55])
def test_momentum_is_low_at_each_restart_peak(tiny: Tiny, steps: int) -> None:
    config = tiny(
        "optim.anneal_momentum=true",
        "optim.momentum_range=[0.85, 0.95]",
        "schedule.max_cycles=null",
        f"schedule.max_steps={steps}",
    )
    trainer = Trainer(config)
    trainer.run()
    # after `steps` updates the next step is a restart (a peak): beta1 at the low end
    assert TINY_SCHEDULE.position(steps).offset == 0.0
    assert trainer.optimizer.param_groups[0]["betas"][0] == pytest.approx(0.85, abs=1e-12)


def test_momentum_is_high_where_the_rate_is_at_its_floor(tiny: Tiny) -> None:
    config = tiny(
        "optim.anneal_momentum=true",
        "optim.momentum_range=[0.85, 0.95]",
        "schedule.max_cycles=1",
    )
    trainer = Trainer(config)
    trainer.run()
    # after the cycle limit the rate holds at lr_min: beta1 at the top of its range
    assert trainer.optimizer.param_groups[0]["betas"][0] == pytest.approx(0.95, abs=1e-12)


def test_sgd_with_momentum_trains(tiny: Tiny) -> None:
    result = Trainer(tiny("optim.name=sgd", "schedule.lr_max=0.05")).run()
    assert result.status == "completed"
    assert all(c.val_auc > 0.55 for c in result.cycles)


def test_the_model_learns_something(tiny: Tiny) -> None:
    result = Trainer(tiny("schedule.lr_max=0.01")).run()
    best = max(c.val_auc for c in result.cycles)
    assert best > 0.62, result.cycles  # 0.5 is chance; 4,000 rows and 100 steps get ~0.64


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_paths_train_and_checkpoint_the_scaler(tiny: Tiny, amp: str) -> None:
    """The CUDA job's AMP code (autocast, fp16 grad scaler) exercised on the CPU."""
    result = Trainer(
        tiny(f"runtime.amp={amp}", "schedule.lr_max=0.01", "fault_injection.nan_steps=[40]")
    ).run()
    assert result.status == "completed"
    assert result.amp == amp
    assert result.nan_count == 1  # only the poisoned loss, not scaler overflows
    assert max(c.val_auc for c in result.cycles) > 0.62
    last = load_checkpoint(Path(result.run_dir) / "checkpoints" / "last.ckpt")
    if amp == "fp16":
        assert last["scaler"]["scale"] > 0
    else:
        assert last["scaler"] is None
