"""Interpretability: which input features matter, and which units survived pruning and why."""

from __future__ import annotations

from pathlib import Path

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


def plot_explanations(importance: torch.Tensor, kept: dict[str, float], path: str | Path) -> Path:
    """Input-feature importance as a map (or bars for 1-D inputs) beside the kept fraction per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    image = importance.squeeze()
    if image.dim() == 2:
        shown = left.imshow(image.numpy(), cmap="viridis")
        fig.colorbar(shown, ax=left)
        left.set_xticks([])
        left.set_yticks([])
    else:
        left.bar(range(image.numel()), image.flatten().numpy())
    left.set_title("input-feature importance (|x * grad|)")
    right.barh(list(kept), list(kept.values()), color="#55a868")
    right.set_xlim(0, 1)
    right.set_title("fraction of units kept per layer")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
