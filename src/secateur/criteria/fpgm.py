"""FPGM (He et al. 2019): filters near the geometric median of their layer are the most replaceable."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Criterion, GroupWeights, register_criterion


def fpgm(filters: torch.Tensor) -> torch.Tensor:
    """The summed distance of each filter (a row) to all others; small means redundant.

    >>> fpgm(torch.tensor([[0.0], [1.0], [5.0]]))
    tensor([6., 5., 9.])
    """
    return torch.cdist(filters.float(), filters.float()).sum(1)


@register_criterion
@dataclass(frozen=True)
class Fpgm(Criterion):
    """Units only: a unit's summed distance to the others over every weight it produces."""

    name = "fpgm"
    units_only = True

    def unit_scores(self, group: GroupWeights) -> torch.Tensor:
        rows = [group.rows(t.float(), m) for m, t, _, _ in group.members if m.role == "out"]
        return fpgm(torch.cat(rows, 1)).cpu()
