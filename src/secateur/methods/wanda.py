"""Wanda (Sun et al. 2024, "A Simple and Effective Pruning Approach for Large Language Models").

The whole method in one file: a streaming statistic (the L2 norm of every input feature, summed
batch by batch) and a weight update (zero the lowest ``|W_ij| * ||X_j||`` of each output row).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import register_method
from .oneshot import OneShot


class ColumnNorms:
    """Running ``sum_t x_tj**2`` over every token ``t``: ``norms()`` is ``||X_j||_2`` over all batches seen."""

    def __init__(self, in_features: int) -> None:
        self.squares = torch.zeros(in_features, dtype=torch.float64)

    def update(self, x: torch.Tensor) -> None:
        # summed in float32 within a batch (relative error ~1e-7, 3x faster than float64), float64 across them
        self.squares += x.float().square().sum(0).double().cpu()

    def norms(self) -> torch.Tensor:
        return self.squares.sqrt().float()


@register_method
@dataclass(frozen=True)
class Wanda(OneShot):
    """Score ``|W_ij| * ||X_j||_2``, compared within each output row (or each N:M group)."""

    name = "wanda"

    def new_statistic(self, in_features: int) -> ColumnNorms:
        return ColumnNorms(in_features)

    def prune_weight(self, weight, statistic, sparsity):
        scores = weight.abs() * statistic.norms().to(weight.device)[None, :]
        keep = self.keep_mask(scores, sparsity, per_row=True)
        return weight * keep, keep
