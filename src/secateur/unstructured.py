"""Weight masks: unstructured (layer-wise, global, or a per-layer profile) and semi-structured N:M."""

from __future__ import annotations

import torch
from torch import nn

from .criteria import get_criterion
from .errors import InvalidParameterError, PruningError
from .methods import SemiStructured, Unstructured
from .methods.base import match
from .selection import keep_top, nm_mask
from .statistics import Stats

PRUNABLE_TYPES = (nn.Linear, nn.modules.conv._ConvNd)


def prunable_layers(model: nn.Module, ignore: tuple[str, ...] = ()) -> dict[str, nn.Module]:
    """Conv and Linear layers whose names match none of ``ignore``'s patterns."""
    return {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES) and not match(n, ignore)}


def weight_name(layer: str) -> str:
    return f"{layer}.weight" if layer else "weight"


def saliencies(model: nn.Module, method: Unstructured | SemiStructured, stats: Stats) -> dict[str, torch.Tensor]:
    """Per-weight scores of every prunable layer (already-masked weights are zero, so they score lowest)."""
    criterion = get_criterion(method.criterion)
    with torch.no_grad():
        return {name: criterion.layer_scores(criterion.saliency(m.weight, stats.get(weight_name(name), {})))
                for name, m in prunable_layers(model, method.ignore).items()}


def _layer_sparsity(method: Unstructured, layers: list[str]) -> dict[str, float]:
    profile = method.profile or {}
    unused = [p for p in profile if not any(match(n, (p,)) for n in layers)]
    if unused:
        raise InvalidParameterError(f"profile= key {unused[0]!r} matches no prunable layer; layers: "
                                    f"{', '.join(layers)}")
    return {n: profile[key] if (key := match(n, profile)) else method.sparsity for n in layers}


def unstructured_masks(model: nn.Module, method: Unstructured, stats: Stats | None = None) -> dict[str, torch.Tensor]:
    """Keep-masks by tensor name: exactly the requested count per layer, or across all layers (global)."""
    scores = saliencies(model, method, stats or {})
    if not scores:
        raise PruningError("no Conv or Linear layers to prune (check the ignore= patterns)")
    if method.scope == "layer":
        sparsity = _layer_sparsity(method, list(scores))
        return {weight_name(n): keep_top(s, s.numel() - int(sparsity[n] * s.numel())) for n, s in scores.items()}
    flat = torch.cat([s.flatten().cpu() for s in scores.values()])
    keep = keep_top(flat, flat.numel() - int(method.sparsity * flat.numel()))
    out, start = {}, 0
    for n, s in scores.items():
        out[weight_name(n)] = keep[start : start + s.numel()].view_as(s).to(s.device)
        start += s.numel()
    return out


def semistructured_masks(model: nn.Module, method: SemiStructured, stats: Stats | None = None
                         ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """N:M keep-masks, and the layers skipped because their input width is not a multiple of ``m``."""
    masks, skipped = {}, {}
    for name, s in saliencies(model, method, stats or {}).items():
        if s.shape[1] % method.m:
            skipped[name] = f"input size {s.shape[1]} is not a multiple of {method.m}"
        else:
            masks[weight_name(name)] = nm_mask(s, method.n, method.m)
    if not masks:
        raise PruningError(f"no Conv or Linear layer can take {method.n}:{method.m} (check ignore=); skipped: "
                           f"{skipped}")
    return masks, skipped
