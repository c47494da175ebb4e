"""Importance criteria: how much each weight, or each channel of a coupled group, matters.

A criterion is named by a string. Weight scores have the weight's shape; channel scores reduce the
slices of every tensor in a coupled group to one score per channel.
"""

from __future__ import annotations

import torch

from .errors import UnknownCriterionError

CRITERIA: tuple[str, ...] = ("magnitude", "l1", "l2", "random")


def check_criterion(name: str) -> str:
    """Return ``name`` if it is a known criterion, else raise :class:`UnknownCriterionError`.

    >>> check_criterion("l1")
    'l1'
    """
    if name not in CRITERIA:
        raise UnknownCriterionError(
            f"unknown criterion {name!r}; choose one of {', '.join(CRITERIA)}"
        )
    return name


def weight_scores(weight: torch.Tensor, criterion: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Score every element of ``weight`` (higher means keep).

    >>> weight_scores(torch.tensor([-2.0, 1.0]), "magnitude")
    tensor([2., 1.])
    """
    check_criterion(criterion)
    if criterion == "random":
        return torch.rand(weight.shape, generator=generator)
    return weight.detach().abs().float()


def channel_scores(
    slices: list[torch.Tensor], criterion: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Score channels from ``slices``: tensors of shape ``(channels, -1)``, one per group member.

    ``magnitude`` is the L2 norm over every member's slice of a channel; ``l1`` sums absolute values.

    >>> channel_scores([torch.tensor([[3.0, 4.0], [0.0, 1.0]])], "l2")
    tensor([5., 1.])
    """
    check_criterion(criterion)
    size = slices[0].shape[0]
    if criterion == "random":
        return torch.rand(size, generator=generator)
    total = torch.zeros(size)
    for s in slices:
        s = s.detach().float()
        total += s.abs().sum(1) if criterion == "l1" else s.pow(2).sum(1)
    return total if criterion == "l1" else total.sqrt()
