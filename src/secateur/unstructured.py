"""Unstructured pruning: zero individual Conv/Linear weights through masks."""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

from .criteria import weight_scores
from .methods import Unstructured

PRUNABLE_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def prunable_layers(model: nn.Module, ignore: tuple[str, ...] = ()) -> dict[str, nn.Module]:
    """Conv and Linear layers whose names match none of ``ignore``'s patterns."""
    return {n: m for n, m in model.named_modules()
            if isinstance(m, PRUNABLE_TYPES) and not any(fnmatch.fnmatch(n, p) for p in ignore)}


def _keep_top(scores: torch.Tensor, n_keep: int) -> torch.Tensor:
    mask = torch.zeros(scores.numel(), dtype=torch.bool)
    mask[torch.topk(scores.flatten(), n_keep, sorted=False).indices] = True
    return mask.view_as(scores)


def unstructured_masks(model: nn.Module, method: Unstructured) -> dict[str, torch.Tensor]:
    """Keep-masks per layer name; already-zero (masked) weights score lowest and go first."""
    layers = prunable_layers(model, method.ignore)
    scores = {n: weight_scores(m.weight, method.criterion) for n, m in layers.items()}
    if method.scope == "layer":
        return {n: _keep_top(s, s.numel() - int(method.sparsity * s.numel())) for n, s in scores.items()}
    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = _keep_top(flat, flat.numel() - int(method.sparsity * flat.numel()))
    out, start = {}, 0
    for n, s in scores.items():
        out[n] = keep[start : start + s.numel()].view_as(s)
        start += s.numel()
    return out
