"""Training health findings on traces whose answer is known by construction."""

from __future__ import annotations

import math

import pytest

from training.telemetry.health import HealthThresholds, diagnose


def _decaying(steps: int, start: float = 0.7, end: float = 0.5) -> list[tuple[int, float]]:
    return [(s, start + (end - start) * s / (steps - 1)) for s in range(steps)]


def test_a_learning_run_is_healthy() -> None:
    losses = _decaying(300)
    bests = [(0, 99, 0.60), (1, 199, 0.63), (2, 299, 0.65)]
    assert diagnose(losses, [100, 200], bests, warmup_steps=10) == []


def test_flat_loss_is_found_and_measured() -> None:
    # 1% drop over the run: below the 2% threshold
    losses = _decaying(300, 0.70, 0.693)
    (f,) = diagnose(losses, [], [], warmup_steps=0)
    assert f.kind == "flat_loss"
    assert f.value == pytest.approx(0.01, abs=1e-3)
    assert f.threshold == 0.02
    assert "learned nothing" in f.message


def test_flat_loss_ignores_warmup_and_short_runs() -> None:
    # a big drop inside warmup only, flat after it
    losses = [(s, 2.0 - s / 40) for s in range(40)] + [(s, 1.0) for s in range(40, 300)]
    assert [f.kind for f in diagnose(losses, [], [], warmup_steps=0)] == []
    assert [f.kind for f in diagnose(losses, [], [], warmup_steps=40)] == ["flat_loss"]
    assert diagnose([(s, 1.0) for s in range(49)], [], []) == []


def test_restart_spike_at_the_right_step_only() -> None:
    losses = _decaying(300)
    spiked = [(s, v * 2.0) if 200 <= s < 210 else (s, v) for s, v in losses]
    findings = diagnose(spiked, [100, 200], [], warmup_steps=0)
    assert [(f.kind, f.step) for f in findings] == [("restart_spike", 200)]
    assert findings[0].value == pytest.approx(2.0, rel=0.02)
    # a 1.4x bump stays under the default 1.5x
    mild = [(s, v * 1.4) if 100 <= s < 110 else (s, v) for s, v in losses]
    assert diagnose(mild, [100, 200], [], warmup_steps=0) == []


def test_non_finite_losses_are_ignored() -> None:
    losses = _decaying(300)
    losses[205] = (205, math.nan)
    losses[206] = (206, math.inf)
    assert diagnose(losses, [100, 200], [], warmup_steps=0) == []


def test_checkpoint_regression_against_the_best_so_far() -> None:
    bests = [(0, 99, 0.62), (1, 199, 0.66), (2, 299, 0.64), (3, 399, 0.658)]
    found = diagnose([], [], bests)
    # cycle 2 is 0.02 below cycle 1; cycle 3 is 0.002 below: within the tolerance
    assert [(f.kind, f.step) for f in found] == [("checkpoint_regression", 299)]
    assert found[0].value == pytest.approx(0.02)
    assert "cycle 1" in found[0].message


def test_regression_when_lower_is_better() -> None:
    bests = [(0, 10, 0.50), (1, 20, 0.56)]
    found = diagnose([], [], bests, higher_is_better=False, metric="val_loss")
    assert [f.kind for f in found] == ["checkpoint_regression"]
    assert diagnose([], [], bests, higher_is_better=True) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"flat_loss_rel": 1.0}, "flat_loss_rel"),
        ({"restart_spike_ratio": 1.0}, "restart_spike_ratio"),
        ({"restart_window_steps": 0}, "restart_window_steps"),
        ({"regression_tol": -0.1}, "regression_tol"),
    ],
)
def test_bad_thresholds_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HealthThresholds(**kwargs)
