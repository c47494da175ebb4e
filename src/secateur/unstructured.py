"""Weight masks: unstructured (layer-wise or global) and semi-structured N:M."""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from .criteria import lamp, weight_saliency
from .methods import SemiStructured, Unstructured
from .statistics import Stats

PRUNABLE_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def prunable_layers(model: nn.Module, ignore: tuple[str, ...] = ()) -> dict[str, nn.Module]:
    """Conv and Linear layers whose names match none of ``ignore``'s patterns."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, PRUNABLE_TYPES) and not any(fnmatch.fnmatch(n, p) for p in ignore)}


def _saliency(model: nn.Module, method: Unstructured | SemiStructured, stats: Stats) -> dict[str, torch.Tensor]:
    out = {}
    for name, m in prunable_layers(model, method.ignore).items():
        s = weight_saliency(m.weight, method.criterion, stats.get(f"{name}.weight" if name else "weight"))
        out[name] = lamp(s) if method.criterion == "lamp" else s
    return out


def _keep_top(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[torch.topk(scores.flatten(), n_keep, sorted=False).indices] = True
    return mask.view_as(scores)


def unstructured_masks(model: nn.Module, method: Unstructured, stats: Stats | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks per layer name; already-zero (masked) weights score lowest and go first."""
    scores = _saliency(model, method, stats or {})
    if method.scope == "layer":
        return {n: _keep_top(s, s.numel() - int(method.sparsity * s.numel())) for n, s in scores.items()}
    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = _keep_top(flat, flat.numel() - int(method.sparsity * flat.numel()))
    out, start = {}, 0
    for n, s in scores.items():
        out[n] = keep[start : start + s.numel()].view_as(s)
        start += s.numel()
    return out


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest of every ``m`` consecutive scores along the input dimension (dim 1: a
    Linear's input features, a Conv's input channels at each kernel position).

    >>> nm_mask(torch.tensor([[4.0, 1.0, 3.0, 2.0]]), 2, 4).tolist()
    [[True, False, True, False]]
    """
    last = scores.movedim(1, -1)
    groups = last.reshape(*last.shape[:-1], -1, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, torch.topk(groups, n, dim=-1).indices, True)
    return keep.reshape(last.shape).movedim(-1, 1)


def semistructured_masks(model: nn.Module, method: SemiStructured, stats: Stats | None = None
                         ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """N:M keep-masks, and the layers skipped because their input width is not a multiple of ``m``."""
    masks, skipped = {}, {}
    for name, s in _saliency(model, method, stats or {}).items():
        width = s.shape[1]
        if width % method.m:
            skipped[name] = f"input size {width} is not a multiple of {method.m}"
        else:
            masks[name] = nm_mask(s, method.n, method.m)
    return masks, skipped
