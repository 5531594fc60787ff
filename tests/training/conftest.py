"""The ``tiny`` fixture: a training config that runs in a few seconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.training.helpers import TINY
from training.config.train import TrainConfig, load_config


@pytest.fixture
def tiny(tmp_path: Path) -> Callable[..., TrainConfig]:
    """``tiny("optim.grad_accum_steps=2", name="x")`` -> a validated TrainConfig."""

    def make(*extra: str, name: str = "tiny", mlflow: bool = False) -> TrainConfig:
        base = [f"run_name={name}", f"output_dir={tmp_path / 'runs'}", *TINY]
        if not mlflow:
            base.append("mlflow.enabled=false")
        return load_config(None, [*base, *extra])

    return make
