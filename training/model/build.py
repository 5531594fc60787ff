"""Model and optimizer from the config: the one construction the job and lr-find share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch

from training.model.network import TabularMLP

if TYPE_CHECKING:
    from training.config.train import ModelConfig, OptimConfig
    from training.data.preprocess import Preprocessor

__all__ = ["build_model", "build_optimizer"]


def build_model(config: ModelConfig, preprocessor: Preprocessor) -> TabularMLP:
    """The tabular MLP for data with this preprocessing (one embedding per category column)."""
    return TabularMLP(
        preprocessor.cardinalities,
        preprocessor.n_numeric,
        config.hidden,
        config.dropout,
        config.embedding_dim_max,
    )


def build_optimizer(
    config: OptimConfig,
    params: Iterable[torch.nn.Parameter],
    lr: float,
    *,
    fused: bool | None = None,
) -> torch.optim.Optimizer:
    """AdamW or SGD (with momentum) as ``optim`` configures, starting at rate ``lr``.

    ``fused``: one kernel for the whole update (the training job; it also lets the
    optimizer skip a step on the device through ``found_inf``)."""
    params = list(params)
    if config.name == "adamw":
        return torch.optim.AdamW(
            params, lr=lr, betas=config.betas, weight_decay=config.weight_decay, fused=fused
        )
    return torch.optim.SGD(
        params, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay, fused=fused
    )
