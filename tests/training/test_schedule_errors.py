"""Every invalid parameter gets a message naming it and the allowed range."""

from __future__ import annotations

import math

import pytest

from training.schedule import CosineSchedule, ScheduleError

VALID = {"lr_max": 0.1, "cycle_steps": 100}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cycle_steps": 0}, "cycle_steps must be an integer >= 1, got 0"),
        ({"cycle_steps": -5}, "cycle_steps must be an integer >= 1, got -5"),
        ({"cycle_steps": 10.5}, "cycle_steps must be an integer >= 1, got 10.5"),
        ({"cycle_steps": True}, "cycle_steps must be an integer >= 1, got True"),
        ({"cycle_mult": 0.9}, "cycle_mult must be >= 1 (real values allowed), got 0.9"),
        ({"peak_decay": 0.0}, "peak_decay must be in (0, 1], got 0.0"),
        ({"peak_decay": 1.5}, "peak_decay must be in (0, 1], got 1.5"),
        ({"lr_min": 0.2}, "lr_min must be in [0, lr_max=0.1], got 0.2"),
        ({"lr_min": -0.1}, "lr_min must be in [0, lr_max=0.1], got -0.1"),
        ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0, got -1"),
        ({"warmup_start_lr": 0.5}, "warmup_start_lr must be in [0, lr_max=0.1], got 0.5"),
        ({"lr_max": 0.0}, "lr_max must be > 0, got 0.0"),
        ({"lr_max": math.nan}, "lr_max must be finite (not NaN or inf), got nan"),
        ({"lr_max": math.inf}, "lr_max must be finite (not NaN or inf), got inf"),
        ({"lr_min": math.nan}, "lr_min must be finite (not NaN or inf), got nan"),
        ({"cycle_mult": math.inf}, "cycle_mult must be finite (not NaN or inf), got inf"),
        ({"peak_decay": math.nan}, "peak_decay must be finite (not NaN or inf), got nan"),
        (
            {"warmup_start_lr": -math.inf},
            "warmup_start_lr must be finite (not NaN or inf), got -inf",
        ),
        ({"cycle_steps": math.nan}, "cycle_steps must be an integer >= 1, got nan"),
        ({"max_cycles": 0}, "max_cycles must be None or >= 1, got 0"),
        (
            {"restart_warmup_steps": 100},
            "restart_warmup_steps must be smaller than cycle_steps=100",
        ),
        ({"restart_warmup_steps": -2}, "restart_warmup_steps must be an integer >= 0, got -2"),
        ({"steps_per_epoch": 0}, "steps_per_epoch must be None or >= 1, got 0"),
        ({"lr_max": "0.1"}, "lr_max must be a real number, got '0.1'"),
        ({"restarts": (50, 40)}, "restarts must be strictly increasing, got [50, 40]"),
        (
            {"warmup_steps": 20, "restarts": (10,)},
            "restarts must be at or after the end of warmup (step 20)",
        ),
    ],
)
def test_invalid_parameter_is_named(overrides: dict, message: str) -> None:
    with pytest.raises(ScheduleError) as err:
        CosineSchedule(**{**VALID, **overrides})
    assert message in str(err.value)


@pytest.mark.parametrize("step", [-1, 2.5, math.nan, "3", None])
def test_invalid_step_is_named(step: object) -> None:
    with pytest.raises(ScheduleError, match="step must be a non-negative integer"):
        CosineSchedule(**VALID).lr_at(step)  # type: ignore[arg-type]


def test_errors_are_value_errors() -> None:
    # callers that catch ValueError (argparse, pydantic validators) see them too
    assert issubclass(ScheduleError, ValueError)
