"""Properties of the schedule and its torch adapter over random parameters (hypothesis)."""

from __future__ import annotations

import io

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from training.schedule import CosineAnnealingScheduler, CosineSchedule

TOL = 1e-12
pytestmark = pytest.mark.filterwarnings("ignore::training.schedule.FP16UnderflowWarning")


@st.composite
def schedules(draw: st.DrawFn) -> CosineSchedule:
    lr_max = draw(st.floats(1e-5, 10.0))
    t0 = draw(st.integers(1, 120))
    return CosineSchedule(
        lr_max,
        t0,
        lr_min=lr_max * draw(st.sampled_from([0.0, 1e-3, 0.05, 0.3])),
        warmup_steps=draw(st.integers(0, 40)),
        warmup_start_lr=lr_max * draw(st.floats(0.0, 1.0)),
        cycle_mult=draw(st.one_of(st.just(1.0), st.sampled_from([2.0, 3.0]), st.floats(1.0, 3.0))),
        peak_decay=draw(st.floats(0.05, 1.0)),
        max_cycles=draw(st.one_of(st.none(), st.integers(1, 6))),
        restart_warmup_steps=draw(st.integers(0, t0 - 1)) if draw(st.booleans()) else 0,
    )


def peak(s: CosineSchedule, cycle: int) -> float:
    return max(s.lr_max * s.peak_decay**cycle, s.lr_min)


@settings(max_examples=150, deadline=None)
@given(schedules(), st.integers(0, 3000))
def test_rate_stays_between_floor_and_cycle_peak(s: CosineSchedule, step: int) -> None:
    lr = s.lr_at(step)
    if step < s.warmup_steps:
        lo, hi = min(s.warmup_start_lr, s.lr_max), s.lr_max
    else:
        lo, hi = s.lr_min, peak(s, s.cycle_of(step))
    assert lo * (1 - TOL) <= lr <= hi * (1 + TOL)


@settings(max_examples=150, deadline=None)
@given(schedules(), st.integers(0, 2000))
def test_monotone_decrease_inside_a_cycle(s: CosineSchedule, step: int) -> None:
    here, nxt = s.position(step), s.position(step + 1)
    assume(here.phase == "anneal" and nxt.phase == "anneal" and here.cycle == nxt.cycle)
    assert s.lr_at(step + 1) <= s.lr_at(step) * (1 + TOL)


@settings(max_examples=150, deadline=None)
@given(schedules(), st.integers(1, 8))
def test_each_restart_starts_at_the_peak_of_its_cycle(s: CosineSchedule, cycle: int) -> None:
    assume(s.max_cycles is None or cycle < s.max_cycles)
    start = s.cycle_start_step(cycle)
    assume(start < 50_000)
    end = s.cycle_start_step(cycle + 1)
    rates = s.lrs(range(start, min(end, start + 3000)))
    top = start + s.restart_warmup_steps
    # the highest rate of the cycle is where its anneal begins ...
    assert max(rates) == s.lr_at(top)
    if s.cycle_mult in (1.0, 2.0, 3.0):
        # ... and exactly the cycle's peak when the boundary is a whole step
        assert s.lr_at(top) == peak(s, cycle)


def _optimizer(base_lrs: list[float]) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in base_lrs]
    return torch.optim.SGD(groups, lr=base_lrs[0], momentum=0.9)


def _drive(sched: CosineAnnealingScheduler, steps: int, restart_at: set[int]) -> list[list[float]]:
    out = []
    for _ in range(steps):
        if sched.last_epoch in restart_at:
            sched.request_restart()
        out.append([g["lr"] for g in sched.optimizer.param_groups])
        sched.optimizer.step()
        sched.step()
    return out


@settings(max_examples=60, deadline=None)
@given(
    schedules(),
    st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=4),
    st.integers(1, 400),
    st.sets(st.integers(0, 600), max_size=4),
)
def test_resume_from_state_equals_never_stopping(
    s: CosineSchedule, base: list[float], stop: int, restart_at: set[int]
) -> None:
    total = 600
    straight = _drive(CosineAnnealingScheduler(_optimizer(base), s), total, restart_at)

    first = CosineAnnealingScheduler(_optimizer(base), s)
    head = _drive(first, stop, restart_at)
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = CosineAnnealingScheduler(_optimizer(base), s)  # the constructor's schedule
    resumed.load_state_dict(state)
    tail = _drive(resumed, total - stop, restart_at)
    assert head + tail == straight
    # and the rate stays a pure function of (step, recorded restarts)
    replay = CosineSchedule(**s.to_dict(), restarts=resumed.restarts)
    assert [r[0] for r in straight] == [replay.lr_at(i) * 1.0 for i in range(total)]


@settings(max_examples=60, deadline=None)
@given(schedules(), st.lists(st.floats(1e-4, 1.0), min_size=2, max_size=5))
def test_param_groups_keep_their_ratio(s: CosineSchedule, base: list[float]) -> None:
    sched = CosineAnnealingScheduler(_optimizer(base), s)
    for step in range(300):
        rates = [g["lr"] for g in sched.optimizer.param_groups]
        assert rates[0] == s.lr_at(step)
        for k in range(1, len(base)):
            assert abs(rates[k] - rates[0] * base[k] / base[0]) <= TOL * max(rates[k], 1e-300)
        sched.optimizer.step()
        sched.step()
