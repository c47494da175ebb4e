"""Importance criteria: how much each weight, or each unit of a coupled group, matters.

Every criterion gives a *saliency* per element of each parameter (higher means keep):
- ``magnitude`` / ``l2``: ``w**2`` (a unit's score is the L2 norm over its slices), ``l1``: ``|w|``;
- ``taylor`` (first order, Molchanov et al. 2019): ``|w * g|`` with gradients summed over calibration;
- ``hessian`` (OBD with a diagonal Fisher, LeCun et al. 1990): ``w**2 * mean(g**2) / 2``;
- ``activation``: ``|w| * ||x_j||`` for the input feature ``j`` of a Linear/Conv weight (as in Wanda);
- ``random``: a baseline.
Three score whole units: ``lamp`` (Lee et al. 2021: a unit's squared norm over the sum of the squared
norms of all units at least as large in its layer or group), ``fpgm`` (He et al. 2019: a filter's
distance to the others; near the geometric median means replaceable) and ``bn_scale`` (network
slimming, Liu et al. 2017: ``|gamma|`` of the group's BatchNorm).
"""

from __future__ import annotations

import torch

from .errors import UnknownCriterionError

CRITERIA: tuple[str, ...] = ("magnitude", "l1", "l2", "lamp", "fpgm", "bn_scale", "taylor", "hessian",
                             "activation", "random")
NEEDS_DATA = frozenset({"taylor", "hessian", "activation"})
UNITS_ONLY = frozenset({"fpgm", "bn_scale"})


def check_criterion(name: str) -> str:
    """Return ``name`` if it is a known criterion, else raise :class:`UnknownCriterionError`.

    >>> check_criterion("l1")
    'l1'
    """
    if name not in CRITERIA:
        raise UnknownCriterionError(f"unknown criterion {name!r}; choose one of {', '.join(CRITERIA)}")
    return name


def weight_saliency(weight: torch.Tensor, criterion: str, stats: dict[str, torch.Tensor] | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-element saliency of ``weight`` (``stats`` holds ``grad``, ``grad_sq`` or ``input_norm``).

    >>> weight_saliency(torch.tensor([-2.0, 1.0]), "l1")
    tensor([2., 1.])
    """
    check_criterion(criterion)
    w = weight.detach().float()
    stats = stats or {}
    if criterion == "random":
        return torch.rand(w.shape, generator=generator)
    if criterion == "taylor":
        return (w * stats["grad"]).abs()
    if criterion == "hessian":
        return w.pow(2) * stats["grad_sq"] / 2
    if criterion == "activation" and "input_norm" in stats:
        norm = stats["input_norm"]
        return w.abs() * norm.view(1, -1, *([1] * (w.dim() - 2)))
    return w.abs() if criterion in ("l1", "activation") else w.pow(2)


def lamp(scores: torch.Tensor) -> torch.Tensor:
    """LAMP: each score over the sum of all scores at least as large (scores are squared norms).

    >>> lamp(torch.tensor([1.0, 3.0]))
    tensor([0.2500, 1.0000])
    """
    flat = scores.flatten().float()
    order = torch.argsort(flat)
    tail = torch.flip(torch.cumsum(torch.flip(flat[order], [0]), 0), [0])
    out = torch.empty_like(flat)
    out[order] = flat[order] / tail.clamp_min(1e-30)
    return out.view_as(scores)


def fpgm(filters: torch.Tensor) -> torch.Tensor:
    """FPGM: the summed distance of each filter (a row) to all others; small means redundant.

    >>> fpgm(torch.tensor([[0.0], [1.0], [5.0]]))
    tensor([6., 5., 9.])
    """
    return torch.cdist(filters.float(), filters.float()).sum(1)
