"""Angular distance (Gromov et al. 2024, "The Unreasonable Ineffectiveness of the Deeper Layers", eq. 7):
remove the ``n`` contiguous blocks whose input and output are closest,
``d(x_l, x_{l+n}) = arccos(cos(x_l, x_{l+n})) / pi`` at the last token, averaged over samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .base import Criterion, register_criterion

if TYPE_CHECKING:
    from ..depth import BlockStats


@register_criterion
@dataclass(frozen=True)
class Angular(Criterion):
    """Blocks only: the run of ``n`` consecutive blocks with the smallest angular distance between the hidden
    state entering the first and leaving the last (``block_scores`` reports the one-block distances).

    >>> Angular().blocks_only
    True
    """

    name = "angular"
    units_only = True
    blocks_only = True
    contiguous = True  # a ClassVar of the base

    def block_scores(self, blocks: BlockStats) -> torch.Tensor:
        return blocks.angular(1)

    def choose_blocks(self, blocks: BlockStats, count: int) -> list[int]:
        if count <= 0:
            return []
        start = int(torch.argmin(blocks.angular(count)))
        return list(range(start, start + count))
