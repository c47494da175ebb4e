"""LAMP (Lee et al. 2021): layer-adaptive magnitude scores, comparable across layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Criterion, register_criterion


def lamp(scores: torch.Tensor) -> torch.Tensor:
    """Each score over the sum of all scores at least as large (scores are squared norms).

    >>> lamp(torch.tensor([1.0, 3.0]))
    tensor([0.2500, 1.0000])
    """
    flat = scores.flatten().float()
    order = torch.argsort(flat)
    tail = torch.flip(torch.cumsum(torch.flip(flat[order], [0]), 0), [0])
    out = torch.empty_like(flat)
    out[order] = flat[order] / tail.clamp_min(1e-30)
    return out.view_as(scores)


@register_criterion
@dataclass(frozen=True)
class Lamp(Criterion):
    """``w**2`` normalised by LAMP within each layer (weights) or group (units). The best criterion for
    global unstructured pruning in secateur's benchmark (docs/benchmarks.md), hence its default there."""

    name = "lamp"

    def saliency(self, weight, stats):
        return weight.detach().float().pow(2)

    def layer_scores(self, saliency):
        return lamp(saliency)

    def reduce(self, unit_sums):
        return lamp(unit_sums)
