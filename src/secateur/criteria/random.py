"""Random scores: the baseline every criterion should beat."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Criterion, GroupWeights, register_criterion


@register_criterion
@dataclass(frozen=True)
class Random(Criterion):
    """Uniform random scores; ``seed`` makes them repeatable (None draws from torch's global generator)."""

    name = "random"
    seed: int | None = None

    def _generator(self) -> torch.Generator | None:
        return None if self.seed is None else torch.Generator().manual_seed(self.seed)

    def saliency(self, weight, stats):
        return torch.rand(weight.shape, generator=self._generator())

    def unit_scores(self, group: GroupWeights) -> torch.Tensor:
        return torch.rand(group.size, generator=self._generator())
