"""L1: a weight's absolute value (a unit scores the sum of its weights' absolute values)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Criterion, register_criterion


@register_criterion
@dataclass(frozen=True)
class L1(Criterion):
    """``|w|`` per weight, summed per unit."""

    name = "l1"

    def saliency(self, weight, stats):
        return weight.detach().float().abs()
