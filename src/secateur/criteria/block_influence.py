"""Block influence (ShortGPT, Men et al. 2024, "ShortGPT: Layers in Large Language Models are More Redundant
Than You Expect", eq. 2): ``BI_i = 1 - E_tokens[cos(x_i, x_{i+1})]``, the change a block makes to the hidden
states; the blocks that change them least are removed."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Criterion, register_criterion


@register_criterion
@dataclass(frozen=True)
class BlockInfluence(Criterion):
    """Blocks only: ShortGPT's block influence over the calibration tokens (every other criterion also
    removes blocks by it, so this name is for depth-only pruning: ``units=("blocks",)``).

    >>> BlockInfluence().blocks_only
    True
    """

    name = "block_influence"
    units_only = True
    blocks_only = True
