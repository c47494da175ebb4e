"""Interpretability: which input features matter, and which units survived pruning and why."""

from __future__ import annotations

import torch
from torch import nn

from .transaction import eval_mode


def input_importance(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean ``|x * d(logit of the predicted class)/dx|`` over the batch (gradient times input), shaped
    like one input: for an 8x8 digit, an 8x8 map of which pixels drive the decision.

    >>> input_importance(nn.Linear(3, 2), torch.ones(4, 3)).shape
    torch.Size([3])
    """
    x = x.detach().clone().requires_grad_(True)
    with eval_mode(model):
        out = model(x)
        out.gather(1, out.argmax(1, keepdim=True)).sum().backward()
    return (x.grad * x).abs().mean(0).detach()


def kept_fractions(units: dict) -> dict[str, float]:
    """Fraction of each group's units that survived, from ``PruneResult.units``."""
    return {key: u.kept_fraction for key, u in units.items()}
