"""The schedule at points whose value is known analytically, one class per behaviour."""

from __future__ import annotations

import math
import pickle
import warnings
from fractions import Fraction

import pytest

from training.schedule import CosineSchedule, FP16UnderflowWarning


def cos_point(lr_min: float, peak: float, t: float, length: float) -> float:
    return lr_min + 0.5 * (peak - lr_min) * (1 + math.cos(math.pi * t / length))


class TestSingleCycle:
    def test_starts_at_peak_and_halves_at_the_middle(self) -> None:
        s = CosineSchedule(0.2, 100, lr_min=0.02)
        assert s.lr_at(0) == 0.2
        assert s.lr_at(50) == pytest.approx(0.11, rel=1e-15)
        assert s.lr_at(25) == pytest.approx(0.02 + 0.09 * (1 + math.sqrt(0.5)), rel=1e-15)

    def test_restarts_at_peak_after_t0_steps(self) -> None:
        s = CosineSchedule(0.2, 100)
        assert s.lr_at(99) < 0.0001
        assert s.lr_at(100) == 0.2
        assert s.cycle_of(99) == 0
        assert s.cycle_of(100) == 1


class TestWarmup:
    def test_linear_from_warmup_start(self) -> None:
        s = CosineSchedule(0.11, 50, warmup_steps=10, warmup_start_lr=0.01)
        assert s.lr_at(0) == 0.01
        assert s.lr_at(5) == pytest.approx(0.06, rel=1e-15)
        assert s.lr_at(10) == 0.11  # first step after warmup is the first peak
        assert s.position(3).phase == "warmup"
        assert s.position(10).phase == "anneal"

    def test_warmup_belongs_to_cycle_zero(self) -> None:
        s = CosineSchedule(1.0, 20, warmup_steps=5)
        assert [s.cycle_of(i) for i in (0, 4, 5, 24, 25)] == [0, 0, 0, 0, 1]


class TestCycleMultiplier:
    def test_integer_multiplier_boundaries(self) -> None:
        s = CosineSchedule(1.0, 10, cycle_mult=2)
        assert [s.cycle_start_step(i) for i in range(5)] == [0, 10, 30, 70, 150]
        for start in (10, 30, 70, 150):
            assert s.lr_at(start) == 1.0
        assert s.lr_at(20) == pytest.approx(0.5, rel=1e-15)  # middle of the 20-step cycle 1

    def test_real_multiplier_boundary_between_steps(self) -> None:
        # B = 0, 10, 25, 47.5, 81.25: cycle 3 starts between steps 47 and 48
        s = CosineSchedule(1.0, 10, cycle_mult=1.5)
        assert s.cycle_of(47) == 2
        assert s.cycle_of(48) == 3
        assert s.cycle_start_step(3) == 48
        assert s.lr_at(48) == pytest.approx(cos_point(0.0, 1.0, 0.5, 33.75), rel=1e-14)

    def test_decimal_multiplier_restarts_exactly(self) -> None:
        # 10 + 11 = 21, but in floats 10 * 1.1 = 11.000000000000002
        s = CosineSchedule(1.0, 10, cycle_mult=1.1)
        assert s.cycle_start_step(2) == 21
        assert s.lr_at(21) == 1.0
        assert s.lr_at(20) == pytest.approx(cos_point(0.0, 1.0, 10, 11), rel=1e-14)

    def test_exact_where_floor_of_log_lands_one_cycle_early(self) -> None:
        m, t0, step = 3.0, 8, 968  # 8 * (3**5 - 1) / 2 = 968: cycle 5 starts here
        naive = math.floor(math.log(1 + step * (m - 1) / t0) / math.log(m))
        assert naive == 4, "the float formula used by timm lands in the previous cycle"
        s = CosineSchedule(1.0, t0, cycle_mult=m)
        assert s.cycle_of(step) == 5
        assert s.lr_at(step) == 1.0
        assert s.cycle_of(step - 1) == 4

    def test_every_integer_boundary_is_a_peak(self) -> None:
        # exact reference: B_i = T0 * (m**i - 1) / (m - 1) in rational arithmetic
        checked = 0
        for m_text in ("1.1", "1.25", "1.5", "2", "2.5", "3", "4"):
            m = Fraction(m_text)
            for t0 in (1, 4, 8, 10, 16, 20):
                s = CosineSchedule(1.0, t0, cycle_mult=float(m))
                for i in range(1, 30):
                    b = t0 * (m**i - 1) / (m - 1)
                    if b.denominator != 1 or b > 10**13:
                        continue
                    assert s.cycle_start_step(i) == b, (m_text, t0, i)
                    assert s.lr_at(int(b)) == 1.0, (m_text, t0, i)
                    assert s.cycle_of(int(b) - 1) == i - 1
                    checked += 1
        assert checked > 150

    def test_fractional_boundaries_are_not_snapped(self) -> None:
        # m = 2.5, T0 = 4: B_i = 4 * (2.5**i - 1) / 1.5 is never whole for i >= 2
        s = CosineSchedule(1.0, 4, cycle_mult=2.5)
        for i in range(2, 25):
            b = 4 * (Fraction(5, 2) ** i - 1) / Fraction(3, 2)
            assert s.cycle_start_step(i) == math.ceil(b), i


class TestPeakDecayAndFloor:
    def test_each_peak_is_g_times_the_last(self) -> None:
        s = CosineSchedule(0.1, 10, peak_decay=0.5, lr_min=0.001)
        assert [s.lr_at(10 * i) for i in range(4)] == pytest.approx(
            [0.1, 0.05, 0.025, 0.0125], rel=1e-15
        )

    def test_decayed_peak_below_the_floor_holds_the_floor(self) -> None:
        s = CosineSchedule(1.0, 10, peak_decay=0.1, lr_min=0.05)
        assert s.lr_at(10) == pytest.approx(0.1)
        assert all(s.lr_at(i) == 0.05 for i in range(20, 40))

    def test_cycle_limit_holds_lr_min(self) -> None:
        s = CosineSchedule(0.1, 10, lr_min=0.001, max_cycles=2)
        assert s.lr_at(10) == 0.1
        assert s.lr_at(19) > 0.001
        assert all(s.lr_at(i) == 0.001 for i in range(20, 200))
        assert s.position(25).phase == "done"


class TestRestartWarmup:
    def test_ramps_every_restart_but_not_the_first_cycle(self) -> None:
        s = CosineSchedule(1.0, 25, restart_warmup_steps=5, lr_min=0.1)
        assert s.lr_at(0) == 1.0  # cycle 0 starts at its peak (no initial warmup)
        assert s.lr_at(25) == 0.1  # the restart continues from the floor ...
        assert s.lr_at(27) == pytest.approx(0.1 + 0.9 * 2 / 5)  # ... rises linearly ...
        assert s.lr_at(30) == 1.0  # ... reaches the peak after R steps ...
        assert s.lr_at(40) == pytest.approx(0.55)  # ... and anneals over T - R = 20 steps
        assert s.cycle_start_step(2) == 50  # boundaries do not move
        assert s.position(27).phase == "restart_warmup"


class TestHelpers:
    def test_cycle_ends_and_total_steps(self) -> None:
        s = CosineSchedule(1.0, 10, warmup_steps=5, cycle_mult=2, max_cycles=3)
        assert s.cycle_end_steps() == [14, 34, 74]
        assert s.total_steps() == 75
        assert s.total_steps(2) == 35
        assert s.is_cycle_end(14)
        assert not s.is_cycle_end(15)

    def test_total_steps_needs_a_cycle_count(self) -> None:
        with pytest.raises(ValueError, match="num_cycles is required"):
            CosineSchedule(1.0, 10).total_steps()

    def test_from_epochs_converts_once(self) -> None:
        s = CosineSchedule.from_epochs(0.1, 2, 100, warmup_epochs=0.5, restart_warmup_epochs=0.1)
        assert (s.cycle_steps, s.warmup_steps, s.restart_warmup_steps) == (200, 50, 10)
        assert s.steps_per_epoch == 100


class TestRecordedRestarts:
    def test_restart_ends_the_cycle_early_and_starts_the_next(self) -> None:
        s = CosineSchedule(1.0, 100, peak_decay=0.5, restarts=(130,))
        assert s.cycle_of(129) == 1
        assert s.cycle_of(130) == 2
        assert s.lr_at(130) == 0.25  # cycle 2's peak
        assert s.cycle_start_step(3) == 230  # cycle 2 keeps its natural length
        assert s.cycle_end_step(1) == 129

    def test_restart_with_multiplier_uses_the_new_cycles_length(self) -> None:
        # natural: [0, 10), [10, 30), [30, 70); restart at 15 -> cycle 2 = [15, 55)
        s = CosineSchedule(1.0, 10, cycle_mult=2, restarts=(15,))
        assert s.cycle_start_step(2) == 15
        assert s.cycle_start_step(3) == 55
        assert s.lr_at(35) == pytest.approx(0.5, rel=1e-15)

    def test_restart_on_a_natural_boundary_changes_nothing(self) -> None:
        plain = CosineSchedule(1.0, 10, cycle_mult=2)
        assert CosineSchedule(1.0, 10, cycle_mult=2, restarts=(30,)).lrs(range(200)) == plain.lrs(
            range(200)
        )


class TestIdentity:
    def test_fingerprint_covers_parameters_and_steps_per_epoch_not_restarts(self) -> None:
        a = CosineSchedule(0.1, 100, steps_per_epoch=50)
        assert a.fingerprint() == CosineSchedule(0.1, 100, steps_per_epoch=50).fingerprint()
        assert a.fingerprint() == a.with_restart(130).fingerprint()
        assert a.fingerprint() != CosineSchedule(0.1, 100, steps_per_epoch=75).fingerprint()
        assert a.fingerprint() != CosineSchedule(0.1, 101, steps_per_epoch=50).fingerprint()

    def test_picklable_and_equal_after_round_trip(self) -> None:
        s = CosineSchedule(0.1, 10, cycle_mult=1.5, restarts=(12,))
        back = pickle.loads(pickle.dumps(s))
        assert back == s
        assert back.lrs(range(300)) == s.lrs(range(300))


class TestFp16Warning:
    def test_tiny_floor_warns_with_the_fix(self) -> None:
        with pytest.warns(FP16UnderflowWarning, match=r"Raise lr_min to at least .*bf16"):
            CosineSchedule(0.1, 100, lr_min=1e-8)

    @pytest.mark.parametrize("lr_min", [0.0, 1e-3])
    def test_zero_or_reasonable_floor_is_quiet(self, lr_min: float) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            CosineSchedule(0.1, 100, lr_min=lr_min)


def test_the_plot_title_names_the_schedule_settings_that_are_not_defaults() -> None:
    from training.telemetry.plots import _describe

    assert _describe(CosineSchedule(0.01, 100)) == "cosine schedule: lr_max=0.01, T0=100"
    full = CosineSchedule(
        0.003,
        20,
        lr_min=3e-5,
        warmup_steps=5,
        restart_warmup_steps=2,
        cycle_mult=1.5,
        peak_decay=0.8,
        max_cycles=3,
    )
    assert _describe(full) == (
        "cosine schedule: lr_max=0.003, T0=20, m=1.5, g=0.8, lr_min=3e-05, W=5, R=2, K=3"
    )
    # the defaults written out are left out as well
    plain = CosineSchedule(0.01, 100, cycle_mult=1.0, peak_decay=1.0, lr_min=0.0)
    assert _describe(plain) == "cosine schedule: lr_max=0.01, T0=100"
