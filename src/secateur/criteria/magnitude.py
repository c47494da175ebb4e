"""Magnitude: a weight's square (a unit scores the L2 norm of its weights); ``l2`` is the same criterion."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Criterion, register_criterion


@register_criterion
@dataclass(frozen=True)
class Magnitude(Criterion):
    """``w**2`` per weight; ``sqrt(sum w**2)`` per unit.

    >>> import torch
    >>> Magnitude().saliency(torch.tensor([-2.0, 1.0]), {})
    tensor([4., 1.])
    """

    name = "magnitude"

    def saliency(self, weight, stats):
        return weight.detach().float().pow(2)

    def reduce(self, unit_sums):
        return unit_sums.sqrt()


@register_criterion
@dataclass(frozen=True)
class L2(Magnitude):
    """The L2 norm (the same scores as ``magnitude``, under its common name)."""

    name = "l2"
