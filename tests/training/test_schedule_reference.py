"""The schedule against independent implementations: torch and Hugging Face.

Each reference is stepped one call at a time through a real optimizer, so
restart boundaries are compared exactly as a training loop would see them.
"""

from __future__ import annotations

import pytest
import torch
from transformers import (
    get_cosine_schedule_with_warmup,
    get_cosine_with_hard_restarts_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
)

from training.schedule import CosineAnnealingScheduler, CosineSchedule

REL_TOL = 1e-9


def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=lr)


def _trace(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[float]:
    """The rate the optimizer uses at steps 0 .. steps-1 (optimizer, then scheduler)."""
    opt = scheduler.optimizer
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return out


def _assert_close(ours: list[float], ref: list[float]) -> None:
    assert len(ours) == len(ref)
    worst = max(range(len(ref)), key=lambda i: abs(ours[i] - ref[i]) / max(abs(ref[i]), 1e-300))
    err = abs(ours[worst] - ref[worst]) / max(abs(ref[worst]), 1e-300)
    assert err < REL_TOL, f"step {worst}: ours {ours[worst]!r}, reference {ref[worst]!r}"


@pytest.mark.parametrize(("t_max", "eta_min"), [(300, 1e-4), (777, 0.01), (400, 0.0)])
def test_matches_torch_cosine_annealing_lr_one_cycle(t_max: int, eta_min: float) -> None:
    ref = _trace(torch.optim.lr_scheduler.CosineAnnealingLR(_optimizer(0.1), t_max, eta_min), t_max)
    ours = CosineSchedule(0.1, t_max, lr_min=eta_min).lrs(range(t_max))
    if eta_min == 0.0:
        # torch's recursive form near zero: compare on all but the last step,
        # whose exact value is 0.1 * (1 + cos(pi * 399/400)) / 2 ~ 1.5e-6
        ours, ref = ours[:-1], ref[:-1]
    _assert_close(ours, ref)


@pytest.mark.parametrize("t_mult", [1, 2, 3])
@pytest.mark.parametrize(("t_0", "eta_min"), [(7, 1e-3), (50, 0.0), (13, 0.02)])
def test_matches_torch_cosine_annealing_warm_restarts(
    t_0: int, eta_min: float, t_mult: int
) -> None:
    steps = 600
    ref = _trace(
        torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            _optimizer(0.1), T_0=t_0, T_mult=t_mult, eta_min=eta_min
        ),
        steps,
    )
    ours = CosineSchedule(0.1, t_0, lr_min=eta_min, cycle_mult=t_mult).lrs(range(steps))
    # at least two restarts fall inside the compared range, so boundaries are checked
    assert CosineSchedule(0.1, t_0, cycle_mult=t_mult).cycle_of(steps - 1) >= 2
    _assert_close(ours, ref)
    # the adapter, stepped the same way, gives the same trace
    adapter = CosineAnnealingScheduler(
        _optimizer(0.1), CosineSchedule(0.1, t_0, lr_min=eta_min, cycle_mult=t_mult)
    )
    _assert_close(_trace(adapter, steps), ref)


@pytest.mark.parametrize(("warmup", "total"), [(50, 600), (0, 400), (1, 333), (120, 920)])
def test_matches_hf_cosine_with_warmup(warmup: int, total: int) -> None:
    opt = _optimizer(0.1)
    ref = _trace(get_cosine_schedule_with_warmup(opt, warmup, total), total + 1)
    ours = CosineSchedule(0.1, total - warmup, warmup_steps=warmup, max_cycles=1)
    _assert_close(ours.lrs(range(total)), ref[:total])
    # HF ends at exactly 0 at `total`; with max_cycles=1 we hold lr_min = 0 there
    assert ref[total] == pytest.approx(0.0, abs=1e-15)
    assert ours.lr_at(total) == 0.0


@pytest.mark.parametrize(
    ("warmup", "total", "cycles"), [(20, 620, 3), (0, 900, 4), (10, 610, 6), (17, 917, 9)]
)
def test_matches_hf_hard_restarts(warmup: int, total: int, cycles: int) -> None:
    opt = _optimizer(0.1)
    ref = _trace(
        get_cosine_with_hard_restarts_schedule_with_warmup(opt, warmup, total, num_cycles=cycles),
        total,
    )
    ours = CosineSchedule(0.1, (total - warmup) // cycles, warmup_steps=warmup, max_cycles=cycles)
    _assert_close(ours.lrs(range(total)), ref)


@pytest.mark.parametrize(
    ("warmup", "total", "rate"), [(30, 530, 0.05), (0, 700, 0.1), (64, 464, 0.5)]
)
def test_matches_hf_cosine_with_min_lr(warmup: int, total: int, rate: float) -> None:
    opt = _optimizer(0.1)
    ref = _trace(
        get_cosine_with_min_lr_schedule_with_warmup(opt, warmup, total, min_lr_rate=rate), total
    )
    ours = CosineSchedule(0.1, total - warmup, lr_min=0.1 * rate, warmup_steps=warmup)
    _assert_close(ours.lrs(range(total)), ref)


def test_matches_hf_min_lr_given_as_absolute_value() -> None:
    opt = _optimizer(0.3)
    ref = _trace(get_cosine_with_min_lr_schedule_with_warmup(opt, 40, 440, min_lr=0.003), 440)
    _assert_close(CosineSchedule(0.3, 400, lr_min=0.003, warmup_steps=40).lrs(range(440)), ref)
