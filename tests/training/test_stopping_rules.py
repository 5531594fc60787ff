"""The stopping rule's settings against the schedule they stop, and the shipped rule
(configs/flights.yaml) on a tie."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from training.config.train import ConfigError, StoppingConfig, load_config
from training.engine.stopping import StopRule, StopState

ROOT = Path(__file__).resolve().parents[2]


def _can_stop(cycles: int, patience: int, min_cycles: int) -> bool:
    """By enumeration: some sequence of cycle bests makes the rule stop a K-cycle run."""
    rule = StopRule(
        StoppingConfig(enabled=True, patience=patience, min_cycles=min_cycles), "val_auc"
    )
    state = StopState()
    for cycle in range(cycles):  # the worst case for a win: every later cycle loses
        d = rule.observe(state, cycle, cycle, 0.9 - 0.1 * cycle, is_last=cycle == cycles - 1)
        if d.action == "stop":
            return True
    return False


@pytest.mark.parametrize(
    ("cycles", "patience", "min_cycles"),
    [(3, 1, 2), (3, 2, 2), (3, 1, 3), (4, 2, 2), (4, 2, 3), (4, 3, 2), (5, 3, 4), (2, 1, 2)],
)
def test_settings_that_can_never_stop_the_run_are_refused(
    cycles: int, patience: int, min_cycles: int
) -> None:
    overrides = [
        f"schedule.max_cycles={cycles}",
        "stopping.enabled=true",
        f"stopping.patience={patience}",
        f"stopping.min_cycles={min_cycles}",
    ]
    if _can_stop(cycles, patience, min_cycles) or cycles < 3:  # 1-2 cycles: nothing can
        assert load_config(None, overrides).stopping.patience == patience
        return
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    text = str(info.value)
    assert f"stopping.patience {patience}" in text
    assert f"schedule.max_cycles {cycles}" in text
    # off, the same numbers are no error: the rule only records
    assert not load_config(
        None, overrides[:1] + ["stopping.enabled=false"] + overrides[2:]
    ).stopping.enabled


def test_the_shipped_rule_stops_after_a_tie() -> None:
    shipped = yaml.safe_load((ROOT / "configs" / "flights.yaml").read_text())
    config = StoppingConfig(**shipped["stopping"])
    cycles = shipped["schedule"]["max_cycles"]
    rule, state = StopRule(config, "val_auc"), StopState()
    scores = [0.75, 0.75] + [0.8] * (cycles - 2)  # cycle 1 ties cycle 0 exactly
    actions = []
    for cycle, score in enumerate(scores):
        d = rule.observe(state, cycle, cycle, score, is_last=cycle == cycles - 1)
        actions.append(d.action)
        if d.action == "stop":
            break
    # a win must beat the best by more than min_delta; a tie does not
    assert config.min_delta == 0.0
    assert config.patience == 1
    assert actions == ["continue", "stop"]
    assert state.decisions[1].won is False
    assert state.losing_cycles == [1]


def test_a_cycle_with_no_finite_evaluation_counts_as_a_loss(tiny: Any) -> None:
    """Every evaluation of cycle 1 (steps 25-54 of the tiny job, cycles end at 24, 54
    and 99) sees non-finite logits: the cycle has no best, and the rule (patience 1)
    stops the run after it rather than skipping it until the last cycle."""
    import numpy as np

    from training.engine.trainer import Trainer

    class NoFiniteEvalInCycle1(Trainer):
        def _evaluate(self, step: int) -> bool:
            if self.scheduler.schedule.cycle_of(step) != 1:
                return super()._evaluate(step)
            predict = self.runner.predict
            self.runner.predict = lambda *a: np.full_like(predict(*a), np.nan)
            try:
                return super()._evaluate(step)
            finally:
                self.runner.predict = predict

    config = tiny("stopping.enabled=true", "stopping.patience=1", name="nan-cycle")
    result = NoFiniteEvalInCycle1(config).run()
    assert [c.cycle for c in result.finals] == [0]  # cycle 1 kept no best
    assert result.stopping is not None
    assert [(d["cycle"], d["action"]) for d in result.stopping.decisions] == [
        (0, "continue"),
        (1, "stop"),
    ]
    assert result.stopping.decisions[1]["won"] is False
    assert "no finite evaluation" in result.stopping.decisions[1]["reason"]
    assert result.steps_done == 55  # cycle 1's last step is 54
    assert result.stopping.steps_saved == result.total_steps - 55


STOP_AFTER_1 = ["stopping.enabled=true", "stopping.min_delta=0.5", "stopping.patience=1"]


def test_a_checkpoint_from_before_stopping_resumes_with_the_rule_on(
    tiny: Any, tmp_path: Path
) -> None:
    """What a job of before the rule wrote: stopping absent from its definition (as off
    is) and no rule state (payload version 1). Resumed with the rule on, it replays the
    rule over its closed cycles and stops where a run with the rule from the start does."""
    from tests.training.helpers import final_weights, same_weights, version_1_checkpoint
    from training.checkpoint.payload import LastPayload
    from training.engine.trainer import Trainer

    reference = Trainer(tiny(*STOP_AFTER_1, name="reference")).run()
    # stopping off: the old definition; killed after the step-30 checkpoint (after cycle 0)
    path, _ = version_1_checkpoint(tiny("checkpoint.every_steps=30", name="old"))
    assert LastPayload.load(path).stopping is None
    resumed = Trainer(tiny(*STOP_AFTER_1, "checkpoint.every_steps=30", name="old")).run(resume=True)
    assert reference.stopping is not None
    assert resumed.stopping is not None
    assert resumed.steps_done == reference.steps_done == 55
    assert resumed.stopping.decisions == reference.stopping.decisions
    assert same_weights(
        final_weights(Path(resumed.run_dir)), final_weights(Path(reference.run_dir))
    )
