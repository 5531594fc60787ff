"""The torch adapter: contract, state, plateau restarts, refusals."""

from __future__ import annotations

import io

import pytest
import torch

from training.schedule import (
    CosineAnnealingScheduler,
    CosineSchedule,
    PlateauRule,
    ScheduleError,
    ScheduleMismatchError,
)


def _model_and_optimizer(lr: float = 1e-3) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Linear(4, 1)
    return model, torch.optim.AdamW(model.parameters(), lr=lr)


def _advance(sched: CosineAnnealingScheduler, n: int) -> None:
    for _ in range(n):
        sched.optimizer.step()
        sched.step()


class TestContract:
    @pytest.mark.parametrize("n", [0, 1, 7, 99, 100, 101, 250])
    def test_rate_after_n_steps_is_the_schedule_at_n(self, n: int) -> None:
        schedule = CosineSchedule(0.05, 100, lr_min=1e-3, warmup_steps=10, cycle_mult=1.5)
        # the optimizer's own lr (1e-3) is not the schedule's peak: group 0 follows the schedule
        _, opt = _model_and_optimizer(lr=1e-3)
        sched = CosineAnnealingScheduler(opt, schedule)
        _advance(sched, n)
        assert opt.param_groups[0]["lr"] == schedule.lr_at(n)
        assert sched.get_last_lr() == [schedule.lr_at(n)]

    def test_is_a_torch_lr_scheduler(self) -> None:
        _, opt = _model_and_optimizer()
        assert isinstance(
            CosineAnnealingScheduler(opt, CosineSchedule(0.1, 10)),
            torch.optim.lr_scheduler.LRScheduler,
        )

    def test_tensor_learning_rates_are_filled_in_place(self) -> None:
        model = torch.nn.Linear(4, 1)
        opt = torch.optim.Adam(model.parameters(), lr=torch.tensor(0.01))
        tensor = opt.param_groups[0]["lr"]
        sched = CosineAnnealingScheduler(opt, CosineSchedule(0.01, 10))
        _advance(sched, 5)
        assert opt.param_groups[0]["lr"] is tensor
        assert float(tensor) == pytest.approx(CosineSchedule(0.01, 10).lr_at(5))

    def test_explicit_group_scales(self) -> None:
        a, b = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
        opt = torch.optim.SGD([{"params": a.parameters()}, {"params": b.parameters()}], lr=0.3)
        sched = CosineAnnealingScheduler(opt, CosineSchedule(0.1, 10), group_scales=[1.0, 0.25])
        assert [g["lr"] for g in opt.param_groups] == [0.1, 0.025]
        with pytest.raises(ScheduleError, match="one non-negative number per param group"):
            CosineAnnealingScheduler(opt, CosineSchedule(0.1, 10), group_scales=[1.0])
        del sched

    def test_epoch_argument_is_refused(self) -> None:
        _, opt = _model_and_optimizer()
        sched = CosineAnnealingScheduler(opt, CosineSchedule(0.1, 10))
        with pytest.raises(TypeError, match="takes no epoch"):
            sched.step(5)


class TestState:
    def _state(self, sched: CosineAnnealingScheduler) -> dict:
        buf = io.BytesIO()
        torch.save(sched.state_dict(), buf)
        buf.seek(0)
        return torch.load(buf, weights_only=True)

    def test_other_schedule_is_refused_with_the_difference(self) -> None:
        _, opt = _model_and_optimizer()
        old = CosineAnnealingScheduler(opt, CosineSchedule(0.1, 100, steps_per_epoch=100))
        _advance(old, 30)
        state = self._state(old)
        _, opt2 = _model_and_optimizer()
        grown = CosineAnnealingScheduler(opt2, CosineSchedule(0.1, 100, steps_per_epoch=150))
        with pytest.raises(ScheduleMismatchError) as err:
            grown.load_state_dict(state)
        assert "steps_per_epoch: saved 100, now 150" in str(err.value)
        assert "training data changed size" in str(err.value)
        # nothing was taken over from the refused state
        assert grown.last_epoch == 0

    def test_load_never_replaces_the_constructor_schedule(self) -> None:
        schedule = CosineSchedule(0.1, 20)
        _, opt = _model_and_optimizer()
        a = CosineAnnealingScheduler(opt, schedule)
        _advance(a, 25)
        a.request_restart()
        _, opt2 = _model_and_optimizer()
        b = CosineAnnealingScheduler(opt2, schedule)
        b.load_state_dict(self._state(a))
        assert b.schedule.to_dict() == schedule.to_dict()
        assert b.restarts == (25,)
        assert opt2.param_groups[0]["lr"] == schedule.with_restart(25).lr_at(25)

    @pytest.mark.parametrize(
        "state",
        [{}, {"last_epoch": 3}, {"format": "x", "unknown": 1}, "not a dict"],
    )
    def test_foreign_state_is_refused(self, state: object) -> None:
        _, opt = _model_and_optimizer()
        sched = CosineAnnealingScheduler(opt, CosineSchedule(0.1, 20))
        with pytest.raises(ScheduleMismatchError, match="not a CosineAnnealingScheduler state"):
            sched.load_state_dict(state)  # type: ignore[arg-type]


class TestRestarts:
    def test_request_restart_jumps_to_the_next_peak_now(self) -> None:
        schedule = CosineSchedule(1.0, 100, peak_decay=0.5)
        _, opt = _model_and_optimizer()
        sched = CosineAnnealingScheduler(opt, schedule)
        _advance(sched, 40)
        assert sched.request_restart() is True
        assert opt.param_groups[0]["lr"] == 0.5
        assert sched.restarts == (40,)
        assert sched.position.cycle == 1
        # requesting again at the first step of a cycle does nothing
        assert sched.request_restart() is False

    def test_no_restart_during_warmup(self) -> None:
        _, opt = _model_and_optimizer()
        sched = CosineAnnealingScheduler(opt, CosineSchedule(1.0, 100, warmup_steps=20))
        _advance(sched, 10)
        assert sched.request_restart() is False
        assert sched.restarts == ()

    def test_plateau_rule_restarts_after_patience(self) -> None:
        _, opt = _model_and_optimizer()
        sched = CosineAnnealingScheduler(
            opt, CosineSchedule(1.0, 1000), plateau=PlateauRule(patience=2, threshold=0.01)
        )
        losses = [1.0, 0.8, 0.7, 0.699, 0.698, 0.697]
        fired = []
        for loss in losses:
            _advance(sched, 10)
            fired.append(sched.observe(loss))
        # 0.699, 0.698 and 0.697 are within 1 % of 0.7: the third one exceeds patience 2
        assert fired == [False, False, False, False, False, True]
        assert sched.restarts == (60,)
        assert opt.param_groups[0]["lr"] == 1.0

    def test_plateau_rule_does_not_restart_past_the_cycle_limit(self) -> None:
        _, opt = _model_and_optimizer()
        sched = CosineAnnealingScheduler(
            opt, CosineSchedule(1.0, 100, max_cycles=1), plateau=PlateauRule(patience=0)
        )
        _advance(sched, 10)
        sched.observe(1.0)
        _advance(sched, 10)
        assert sched.observe(1.0) is False
        assert sched.restarts == ()

    def test_plateau_state_survives_a_resume(self) -> None:
        def build() -> CosineAnnealingScheduler:
            _, opt = _model_and_optimizer()
            return CosineAnnealingScheduler(
                opt, CosineSchedule(1.0, 1000), plateau=PlateauRule(patience=2)
            )

        a, b = build(), build()
        for loss in (1.0, 1.0, 1.0):  # two bad evaluations so far
            _advance(a, 5)
            a.observe(loss)
        b.load_state_dict(TestState()._state(a))
        _advance(b, 5)
        assert b.observe(1.0) is True  # the third bad one fires, as it would have in `a`

    def test_observe_without_rule_is_an_error(self) -> None:
        _, opt = _model_and_optimizer()
        sched = CosineAnnealingScheduler(opt, CosineSchedule(1.0, 100))
        with pytest.raises(ScheduleError, match="needs a PlateauRule"):
            sched.observe(0.5)
