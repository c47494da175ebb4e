"""First-order Taylor (Molchanov et al. 2019): the loss change estimated by ``|w * dL/dw|``. Summed over a
coupled group's weights it is LLM-Pruner's element-wise first-order group importance (Ma et al. 2023,
"LLM-Pruner: On the Structural Pruning of Large Language Models", eq. 4 with sum aggregation); on a causal
language model the loss is the next-token loss of the calibration windows."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Criterion, register_criterion
from .needs import stat


@register_criterion
@dataclass(frozen=True)
class Taylor(Criterion):
    """``|w * g|`` with gradients ``g`` summed over the calibration batches."""

    name = "taylor"
    needs = frozenset({"grad"})

    def saliency(self, weight, stats):
        return (weight.detach().float() * stat(stats, "grad", self.name)).abs()
