"""The trainer's cycle hooks (training/results.py): each closed cycle's best reaches every
hook; a hook returning True ends the run there, status ``pruned``, checkpointed; hooks
that never ask change nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.training.helpers import final_weights, same_weights
from training import api
from training.config.train import TrainConfig
from training.results import CycleEndEvent, TrainResult
from training.schedule import CosineSchedule


def test_every_cycle_end_reaches_the_hooks_and_a_hook_that_never_asks_changes_nothing(
    tiny: Callable[..., TrainConfig],
) -> None:
    seen: list[CycleEndEvent] = []
    watched = api.train(tiny(name="watched"), cycle_hooks=[lambda e: seen.append(e) or False])
    plain = api.train(tiny(name="plain"))
    assert watched.status == plain.status == "completed"
    assert [e.best for e in seen] == watched.finals  # each cycle's best, in order, once
    schedule = CosineSchedule(**watched.schedule)
    assert [e.end_step for e in seen] == schedule.cycle_end_steps(len(seen))
    assert all(e.run_name == "watched" and e.cost_usd >= 0 for e in seen)
    assert [(c.step, c.val_auc) for c in watched.finals] == [
        (c.step, c.val_auc) for c in plain.finals
    ]
    assert same_weights(final_weights(Path(watched.run_dir)), final_weights(Path(plain.run_dir)))


def test_a_hook_that_asks_ends_the_run_at_that_cycle(tiny: Callable[..., TrainConfig]) -> None:
    config = tiny(name="pruned")
    calls: list[int] = []

    def prune_after_first(event: CycleEndEvent) -> bool:
        calls.append(event.best.cycle)
        return event.best.cycle == 0

    result = api.train(config, cycle_hooks=[prune_after_first, lambda e: False])
    assert result.status == "pruned"
    assert calls == [0]
    schedule = CosineSchedule(**result.schedule)
    assert result.steps_done == schedule.cycle_end_step(0) + 1 < result.total_steps
    assert [c.cycle for c in result.finals] == [0]
    assert "pruned by a cycle hook" in result.stop_reason
    assert api.has_checkpoint(config)
    assert TrainResult.load(api.run_dir(config)).status == "pruned"
