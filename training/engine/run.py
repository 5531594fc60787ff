"""The job in this process: :func:`train` a config, and what its run folder holds
(:func:`run_dir`, :func:`has_checkpoint`, :func:`finished`). The trainer itself is
imported only when a run starts (torch)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from training.config.text import ConfigError
from training.results import TrainResult

if TYPE_CHECKING:
    from training.config.train import TrainConfig
    from training.data.dataset import PreparedData
    from training.data.spec import DatasetSpec
    from training.engine.distributed import DistContext
    from training.results import CycleHook

__all__ = ["finished", "has_checkpoint", "run_dir", "train"]


def run_dir(config: TrainConfig) -> Path:
    if not config.run_name:
        raise ConfigError("the run has no run_name: its folder is chosen when it starts")
    return config.output_dir / config.run_name


def has_checkpoint(config: TrainConfig) -> bool:
    """Whether the named run has a ``last`` checkpoint to resume from."""
    folder = run_dir(config) / "checkpoints"
    return any((folder / name).exists() for name in ("last.ckpt", "last.prev.ckpt"))


def finished(config: TrainConfig) -> TrainResult | None:
    """The result of the named run if it has finished, else None."""
    if not config.run_name or not (run_dir(config) / "result.json").exists():
        return None
    return TrainResult.load(run_dir(config))


def train(
    config: TrainConfig,
    *,
    resume: bool | Literal["if_present"] = False,
    ctx: DistContext | None = None,
    data: PreparedData | None = None,
    spec: DatasetSpec | None = None,
    cycle_hooks: Sequence[CycleHook] = (),
) -> TrainResult:
    """Run the training job in this process; ``resume="if_present"`` continues the named
    run from its checkpoint when it has one (a retried task), else starts it.
    ``cycle_hooks`` see each cycle's best as it closes; one returning True ends the run
    there (status ``pruned``: the tuner's pruner)."""
    from training.engine.trainer import Trainer

    if resume == "if_present":
        resume = bool(config.run_name) and has_checkpoint(config)
    trainer = Trainer(config, ctx=ctx, data=data, spec=spec, cycle_hooks=cycle_hooks)
    return trainer.run(resume=bool(resume))
