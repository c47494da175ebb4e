"""Optimal Brain Damage (LeCun et al. 1990) with a diagonal Fisher approximation of the Hessian."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Criterion, register_criterion
from .needs import stat


@register_criterion
@dataclass(frozen=True)
class Hessian(Criterion):
    """``w**2 * E[g**2] / 2``: the loss increase OBD predicts for removing ``w``."""

    name = "hessian"
    needs = frozenset({"grad_sq"})

    def saliency(self, weight, stats):
        return weight.detach().float().pow(2) * stat(stats, "grad_sq", self.name) / 2
