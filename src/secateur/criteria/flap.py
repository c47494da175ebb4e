"""FLAP (An et al. 2024, "Fluctuation-based Adaptive Structured Pruning for Large Language Models"): the
fluctuation of a layer's input features, weighted by the weights that read them, standardised per layer
so that units of all layers and modules rank together; the removed inputs' mean is compensated with a bias."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Criterion, GroupWeights, register_criterion
from .magnitude import Magnitude


def standardize(values: torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` over all entries (FLAP's per-layer standardisation).

    >>> standardize(torch.tensor([1.0, 2.0, 3.0])).tolist()
    [-1.0, 0.0, 1.0]
    """
    return (values - values.mean()) / (values.std() + 1e-12)


def fluctuation(weight: torch.Tensor, dim: int, variance: torch.Tensor) -> torch.Tensor:
    """FLAP's WIFV metric of every input feature ``j`` (along ``dim``): ``Var(x_j) * ||W[:, j]||**2``.

    >>> fluctuation(torch.tensor([[1.0, 2.0], [1.0, 0.0]]), 1, torch.tensor([1.0, 0.5])).tolist()
    [2.0, 2.0]
    """
    w2 = weight.detach().float().pow(2).movedim(dim, 0).reshape(weight.shape[dim], -1).sum(1)
    return variance.to(w2.device) * w2


@register_criterion
@dataclass(frozen=True)
class Flap(Criterion):
    """Units only. For each layer that reads the group's channels as inputs (o_proj for heads, down_proj for
    FFN neurons, every projection for the hidden size) the fluctuation metric of each input channel is
    standardised over the layer's channels and averaged over the channels of a unit (FLAP eq. 5 and its
    adaptive structure search "AL-AM": standardised scores rank units of all layers and modules together,
    each unit weighted by the parameters it removes). Scores are already comparable across groups, so global
    ranking uses them as they are. With ``compensate`` (the paper's bias compensation) the mean contribution
    of every removed input, ``W[:, removed] @ mean(x[removed])``, is added to the reading layer's bias (a
    bias is added where the layer has none; see docs/architecture.md for how configs express it).

    >>> Flap().compensates
    True
    """

    name = "flap"
    needs = frozenset({"input_moments"})
    units_only = True
    compensate: bool = True

    @property
    def compensates(self) -> bool:
        return self.compensate

    def unit_scores(self, group: GroupWeights) -> torch.Tensor:
        parts = []
        for member, tensor, variance in group.inputs("input_var"):
            metric = group.unit_values(fluctuation(tensor, member.dim, variance), member)
            parts.append(standardize(metric).mean(1).cpu())
        if not parts:
            return standardize(Magnitude().unit_scores(group))
        return torch.stack(parts).mean(0)

    def normalize(self, scores: torch.Tensor) -> torch.Tensor:
        return scores
