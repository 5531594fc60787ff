"""A tabular MLP: one embedding per categorical column, concatenated with the
numeric features, then fully connected layers to one logit."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def embedding_dim(cardinality: int, cap: int) -> int:
    """fastai's rule of thumb: 1.6 * n**0.56, at most ``cap``."""
    return max(1, min(cap, round(1.6 * cardinality**0.56)))


class TabularMLP(nn.Module):
    def __init__(
        self,
        cardinalities: list[int],
        n_numeric: int,
        hidden: list[int],
        dropout: float = 0.1,
        embedding_dim_max: int = 16,
    ) -> None:
        super().__init__()
        self.cardinalities = list(cardinalities)
        self.n_numeric = n_numeric
        self.hidden = list(hidden)
        self.dropout = dropout
        self.embedding_dim_max = embedding_dim_max
        dims = [embedding_dim(c, embedding_dim_max) for c in cardinalities]
        self.embeddings = nn.ModuleList(
            nn.Embedding(c, d) for c, d in zip(cardinalities, dims, strict=True)
        )
        layers: list[nn.Module] = []
        width = sum(dims) + n_numeric
        for h in hidden:
            layers += [nn.Linear(width, h), nn.SiLU(), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.body = nn.Sequential(*layers)

    def forward(self, cats: torch.Tensor, nums: torch.Tensor) -> torch.Tensor:
        parts = [emb(cats[:, j]) for j, emb in enumerate(self.embeddings)]
        parts.append(nums)
        return self.body(torch.cat(parts, dim=1)).squeeze(1)

    def signature(self) -> dict[str, Any]:
        """What a checkpoint must match to be loaded into this model."""
        return {
            "cardinalities": self.cardinalities,
            "n_numeric": self.n_numeric,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "embedding_dim_max": self.embedding_dim_max,
        }

    @classmethod
    def from_signature(cls, sig: dict[str, Any]) -> TabularMLP:
        return cls(
            sig["cardinalities"],
            sig["n_numeric"],
            sig["hidden"],
            sig["dropout"],
            sig["embedding_dim_max"],
        )
