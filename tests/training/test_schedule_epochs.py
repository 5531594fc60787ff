"""The schedule in epochs: the same curve for any window, within bounds, one conversion.

The reference is the schedule's formula written in epochs (warmup, then cosine
cycles of T0 * m**i epochs with decaying peaks), evaluated independently of
:mod:`training.schedule`; a schedule built for a window of any size must follow
it, to within the rounding of one optimizer step.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from tests.spec_support import churn_spec
from training.config.train import ScheduleConfig, load_config
from training.data.spec import DatasetSpec
from training.schedule import CosineSchedule
from training.schedule.epochs import DEFAULT_MIN_CYCLE_STEPS, CycleBounds, plan_steps

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "configs" / "flights.yaml"


def reference_lr(epoch: float, s: ScheduleConfig) -> float:
    """The schedule's definition in epochs (no restart ramp: the ramp is set to 0 here)."""
    assert s.cycle_epochs is not None
    assert s.warmup_epochs is not None
    if epoch < s.warmup_epochs:
        return s.warmup_start_lr + (s.lr_max - s.warmup_start_lr) * epoch / s.warmup_epochs
    t, i, length = epoch - s.warmup_epochs, 0, s.cycle_epochs
    while t >= length:
        t, i, length = t - length, i + 1, length * s.cycle_mult
    if s.max_cycles is not None and i >= s.max_cycles:
        return s.lr_min
    peak = max(s.lr_max * s.peak_decay**i, s.lr_min)
    return s.lr_min + 0.5 * (peak - s.lr_min) * (1 + math.cos(math.pi * t / length))


def _no_ramp() -> ScheduleConfig:
    return ScheduleConfig(restart_warmup_epochs=0.0)


# rows of a training window -> steps per epoch with the shipped batch of 512
@pytest.mark.parametrize("train_rows", [7_200, 40_000, 67_000, 1_000_000])
def test_the_same_curve_in_epochs_for_any_window(train_rows: int) -> None:
    s = _no_ramp()
    spe = train_rows // 512
    schedule = s.build(spe)
    # one optimizer step is 1/spe epochs: the rate moves at most lr_max * pi / T0 per step
    tol = s.lr_max * (math.pi / (s.cycle_epochs * spe) + 1 / (s.warmup_epochs * spe))
    # points more than a step away from a restart (0.75, 3.75, 8.25, 15 epochs)
    for epoch in (0.0, 0.3, 0.6, 1.5, 3.0, 4.0, 5.0, 8.0, 10.0, 14.0, 16.0):
        step = round(epoch * spe)
        assert schedule.lr_at(step) == pytest.approx(reference_lr(step / spe, s), abs=tol), epoch
    # the run covers the same number of epochs whatever the window: W + T0 (1 + m + m^2)
    epochs = schedule.total_steps() / spe
    assert epochs == pytest.approx(0.75 + 3.0 * (1 + 1.5 + 2.25), abs=3 / spe)


def test_the_shipped_config_is_in_epochs_not_2000_steps() -> None:
    """Issue 16: 2,000 steps whatever the data was 110 epochs of a 9k-row window."""
    shipped = load_config(SHIPPED).schedule
    assert (shipped.cycle_steps, shipped.cycle_epochs) == (None, 3.0)
    small = shipped.build((9_000 * 8 // 10) // 512)  # 9k rows, 80 % for training: 14 per epoch
    large = shipped.build(64_631 // 512)  # Jan-Mar flights: 64,631 training rows, 126 per epoch
    assert small.total_steps() / 14 == pytest.approx(large.total_steps() / 126, rel=0.05)
    assert small.total_steps() / 14 < 16  # epochs, not 110
    # three months of flights keep (about) the schedule they had in steps: T0 400, W 100, R 20
    assert (large.cycle_steps, large.warmup_steps, large.restart_warmup_steps) == (378, 94, 19)
    assert large.total_steps() == 1890  # 2,000 before


def test_bounds_clamp_the_cycle_and_scale_its_ramps() -> None:
    s = ScheduleConfig()  # 3-epoch cycle, 0.75-epoch warmup, 0.15-epoch ramp
    tiny = s.build(2)  # 6 steps of cycle: below the default bound
    assert tiny.cycle_steps == DEFAULT_MIN_CYCLE_STEPS
    # the warmup keeps its share of the cycle (0.75 / 3 of 20 steps)
    assert (tiny.warmup_steps, tiny.restart_warmup_steps) == (5, 1)
    assert tiny.steps_per_epoch == 2  # the fingerprint still records the data's size

    spec_bounds = CycleBounds(min_cycle_steps=50, max_cycle_steps=600)
    assert s.build(2, spec_bounds).cycle_steps == 50
    big = s.build(10_000, spec_bounds)
    assert (big.cycle_steps, big.warmup_steps, big.restart_warmup_steps) == (600, 150, 30)
    assert s.build(100, spec_bounds).cycle_steps == 300  # within bounds: untouched

    mine = ScheduleConfig(min_cycle_steps=80)  # the config's own bound wins over the spec's
    assert mine.build(2, spec_bounds).cycle_steps == 80
    assert mine.build(10_000, spec_bounds).cycle_steps == 600  # the spec's max still holds


def test_the_spec_sets_the_bounds() -> None:
    spec = churn_spec(
        features={"plan": "categorical"},
        schedule={"min_cycle_steps": 40, "max_cycle_steps": 90},
    )
    assert ScheduleConfig().build(1, spec.schedule.bounds()).cycle_steps == 40
    assert ScheduleConfig().build(1000, spec.schedule.bounds()).cycle_steps == 90
    with pytest.raises(ValueError, match="min_cycle_steps 9 > max_cycle_steps 3"):
        DatasetSpec.model_validate(
            {**spec.model_dump(), "schedule": {"min_cycle_steps": 9, "max_cycle_steps": 3}}
        )


def test_steps_and_epochs_convert_in_one_place() -> None:
    a = CosineSchedule.from_epochs(0.1, 2.5, 37, warmup_epochs=0.5, restart_warmup_epochs=0.1)
    plan = plan_steps(37, cycle_epochs=2.5, warmup_epochs=0.5, restart_warmup_epochs=0.1)
    assert (a.cycle_steps, a.warmup_steps, a.restart_warmup_steps) == (
        plan.cycle_steps,
        plan.warmup_steps,
        plan.restart_warmup_steps,
    )
    assert (plan.cycle_steps, plan.warmup_steps, plan.restart_warmup_steps) == (92, 18, 4)
    # a cycle in steps is explicit: no bound applies, an epoch warmup uses the data's rate
    explicit = plan_steps(37, cycle_steps=5, warmup_epochs=1.0, bounds=CycleBounds(50, 60))
    assert (explicit.cycle_steps, explicit.warmup_steps, explicit.clamped) == (5, 37, False)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # one form replaces the file's other form, whatever the file says
        (["schedule.cycle_steps=400"], (400, None, None, 0.75)),
        (["schedule.warmup_steps=10"], (None, 3.0, 10, None)),
        (["schedule.cycle_epochs=5"], (None, 5.0, None, 0.75)),
    ],
)
def test_one_form_of_a_length_replaces_the_other(
    overrides: list[str], expected: tuple[object, ...]
) -> None:
    s = load_config(SHIPPED, overrides).schedule
    assert (s.cycle_steps, s.cycle_epochs, s.warmup_steps, s.warmup_epochs) == expected
    from training import api

    updated = api.updated(load_config(SHIPPED), {"schedule.cycle_steps": 400}).schedule
    assert (updated.cycle_steps, updated.cycle_epochs) == (400, None)


def test_config_mistakes_about_bounds_name_the_field(tmp_path: Path) -> None:
    from training.config.train import ConfigError

    cases = {
        "schedule.min_cycle_steps=0": "schedule.min_cycle_steps",
        "schedule.max_cycle_steps=-3": "schedule.max_cycle_steps",
    }
    for override, field in cases.items():
        with pytest.raises(ConfigError, match=field):
            load_config(SHIPPED, [override])
    with pytest.raises(ConfigError, match="min_cycle_steps 90 > max_cycle_steps 10"):
        load_config(SHIPPED, ["schedule.min_cycle_steps=90", "schedule.max_cycle_steps=10"])
    with pytest.raises(ConfigError, match="bound cycle_epochs; with cycle_steps"):
        load_config(SHIPPED, ["schedule.cycle_steps=100", "schedule.max_cycle_steps=10"])
    # a file that says both forms is refused, naming them
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump({"schedule": {"cycle_steps": 100, "cycle_epochs": 2}}))
    with pytest.raises(ConfigError, match=r"cycle_steps and schedule\.cycle_epochs are exclusive"):
        load_config(both)


def test_a_config_in_steps_over_the_epoch_file_survives_the_command_line() -> None:
    """The pod gets --set differences from the shipped file: one form of a length and
    a list of files travel and read back to the same config."""
    from training import api

    base = load_config(SHIPPED)
    config = api.updated(
        base,
        {
            "run_name": "r",
            "data.source": "files",
            "data.features": ["/w/2024-01.parquet", "s3://bucket/2024-02.parquet"],
            "data.labels": "/w/labels",
            "schedule.cycle_steps": 400,
        },
    )
    argv = api.train_argv(config, base, config_path=str(SHIPPED))
    sets = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]
    assert "schedule.cycle_epochs=null" in sets
    assert load_config(SHIPPED, [*sets, "run_name=r"]) == config
