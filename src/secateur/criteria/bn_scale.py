"""BN scale (network slimming, Liu et al. 2017): a channel's |gamma| in its BatchNorm."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import Criterion, GroupWeights, register_criterion
from .magnitude import Magnitude


@register_criterion
@dataclass(frozen=True)
class BnScale(Criterion):
    """Units only: the summed ``|gamma|`` of the group's BatchNorm layers (L2 norm if it has none)."""

    name = "bn_scale"
    units_only = True

    def unit_scores(self, group: GroupWeights) -> torch.Tensor:
        gammas = [(m, t) for m, t, module, _ in group.members
                  if m.tensor.endswith(".weight") and isinstance(module, nn.modules.batchnorm._NormBase)]
        if not gammas:
            return Magnitude().unit_scores(group)
        return sum(group.rows(t.float().abs(), m).sum(1) for m, t in gammas).cpu()
