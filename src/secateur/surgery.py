"""Slicing tensors out of a model: cuts are new tensors swapped in for every module that holds the
old one (tied weights stay tied), and module size attributes follow. Nothing is edited in place,
so ``transaction.atomic`` can restore a model by snapshotting references."""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from torch.nn.utils import parametrize

from .errors import PruningError
from .masks import Mask


def owner(model: nn.Module, tensor: str) -> tuple[nn.Module, str]:
    """The module and attribute name that hold ``tensor`` (``"fc.weight"``; a masked weight too)."""
    path, _, leaf = tensor.rpartition(".")
    try:
        module = model.get_submodule(path) if path else model
    except AttributeError:
        module = None
    if module is None or not (leaf in module._parameters or leaf in module._buffers
                              or parametrize.is_parametrized(module, leaf)):
        raise PruningError(f"{tensor!r} is not a parameter or buffer of {type(model).__name__}; was the plan made "
                           "for another model?")
    return module, leaf


def stored(module: nn.Module, leaf: str) -> torch.Tensor | None:
    """The stored tensor behind ``module.<leaf>`` (a masked weight's original values)."""
    if parametrize.is_parametrized(module, leaf):
        return module.parametrizations[leaf].original
    return module._parameters.get(leaf, module._buffers.get(leaf))


def _keep_index(size: int, drop: list[int]) -> torch.Tensor:
    keep = torch.ones(size, dtype=torch.bool)
    keep[drop] = False
    return keep.nonzero().flatten()


def _grouping(module: nn.Module) -> tuple[int, int] | None:
    """``(groups, channels)`` of a grouped conv or a GroupNorm (channels along its weight's first dim)."""
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
        return module.groups, module.in_channels if module.transposed else module.out_channels
    if isinstance(module, nn.GroupNorm):
        return module.num_groups, module.num_channels
    return None


def groups_after(module: nn.Module, drop: list[int]) -> int | None:
    """How many groups a grouped conv or GroupNorm has once rows ``drop`` of its weight go, read before they
    go: the same when every group loses as many channels, fewer when whole groups go (None: not grouped).

    >>> groups_after(nn.GroupNorm(4, 8), [0, 2, 4, 6]), groups_after(nn.GroupNorm(4, 8), [2, 3])
    (4, 3)
    """
    grouping = _grouping(module)
    if grouping is None:
        return None
    groups, channels = grouping
    per, gone = channels // groups, set(drop)
    kept = [sum(c not in gone for c in range(g * per, (g + 1) * per)) for g in range(groups)]
    left = [k for k in kept if k]
    if len(set(left)) != 1 or (len(left) < groups and left[0] != per):
        raise PruningError(f"this plan leaves the groups of {type(module).__name__} with unequal channel counts "
                           f"({kept}); a plan must take as many channels from every group, or whole groups")
    return len(left)


def groups_resized(module: nn.Module, channels: int) -> int | None:
    """The group count of a grouped conv or GroupNorm whose weight now has ``channels`` rows, with no plan to
    say how they went: the same count when it divides them (every group lost as many, as secateur's default
    and Torch-Pruning prune), else as many groups as keep their size (None: not grouped).

    >>> groups_resized(nn.GroupNorm(4, 16), 8), groups_resized(nn.GroupNorm(4, 8), 6)
    (4, 3)
    """
    grouping = _grouping(module)
    if grouping is None:
        return None
    groups, old = grouping
    return groups if channels % groups == 0 else channels // (old // groups)


def sync_module_attributes(module: nn.Module, groups: int | None = None) -> None:
    """Make a module's size attributes agree with its (sliced) tensors; ``groups`` is a grouped conv's or a
    GroupNorm's group count after the cut (``groups_after``)."""
    w = stored(module, "weight") if hasattr(module, "weight") else None
    if isinstance(module, nn.RNNBase):
        module.hidden_size = module.weight_hh_l0.shape[1]
        module.input_size = module.weight_ih_l0.shape[1]
        module._init_flat_weights()
    elif w is None:
        return
    elif isinstance(module, nn.modules.conv._ConvNd):
        if groups:
            module.groups = groups
        if module.transposed:
            module.in_channels, module.out_channels = w.shape[0], w.shape[1] * module.groups
        else:
            module.out_channels, module.in_channels = w.shape[0], w.shape[1] * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = w.shape
    elif isinstance(module, nn.GroupNorm):
        module.num_groups, module.num_channels = groups or module.num_groups, w.shape[0]
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = w.shape[0]
    elif isinstance(module, nn.LayerNorm | nn.RMSNorm):
        module.normalized_shape = tuple(w.shape)
    elif isinstance(module, nn.Embedding):
        module.num_embeddings, module.embedding_dim = w.shape
    elif type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # Hugging Face GPT-2 style
        module.nf = w.shape[1]


def tensor_owners(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """Every (module, attribute) that holds each tensor, so tied tensors are replaced everywhere."""
    owners: dict[int, list[tuple[nn.Module, str]]] = defaultdict(list)
    for module in model.modules():
        for leaf, t in [*module._parameters.items(), *module._buffers.items()]:
            if t is not None:
                owners[id(t)].append((module, leaf))
    return owners


def _sliced(old: torch.Tensor, dims: dict[int, list[int]]) -> torch.Tensor:
    new = old.detach()
    for dim, drop in sorted(dims.items()):
        if drop:
            new = new.index_select(dim, _keep_index(old.shape[dim], drop).to(new.device))
    return nn.Parameter(new.clone(), requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else new.clone()


def _holders(module: nn.Module, leaf: str) -> list[tuple[nn.Module, str]]:
    """Where ``module.<leaf>``'s data lives: the tensor itself, or a masked weight's original and mask."""
    if not parametrize.is_parametrized(module, leaf):
        return [(module, leaf)]
    plist = module.parametrizations[leaf]
    return [(plist, "original"), *((p, "mask") for p in plist if isinstance(p, Mask))]


def apply_cuts(model: nn.Module, cuts: dict[str, dict[int, list[int]]]) -> None:
    """Slice every tensor named in ``cuts`` (new tensors; nothing edited in place)."""
    owners = tensor_owners(model)
    touched: dict[nn.Module, int | None] = {}
    for tensor, dims in cuts.items():
        module, leaf = owner(model, tensor)
        if leaf == "weight":
            touched[module] = groups_after(module, dims.get(0, []))
        for holder, name in _holders(module, leaf):
            old = getattr(holder, name)
            new = _sliced(old, dims)
            for m, attr in owners[id(old)] or [(holder, name)]:
                (m._parameters if attr in m._parameters else m._buffers)[attr] = new
                touched.setdefault(m, groups_after(m, []))
    for module, groups in touched.items():
        sync_module_attributes(module, groups)


def add_bias(layer: nn.Module) -> None:
    """Give a Linear (or a Hugging Face ``Conv1D``) a zero bias if it has none.

    >>> layer = nn.Linear(3, 2, bias=False)
    >>> add_bias(layer)
    >>> layer.bias.tolist()
    [0.0, 0.0]
    """
    if getattr(layer, "bias", None) is not None:
        return
    if not (isinstance(layer, nn.Linear) or hasattr(layer, "nf")):
        raise PruningError(f"cannot add a bias to a {type(layer).__name__}; only Linear layers take one")
    weight = stored(layer, "weight")
    out = weight.shape[1] if hasattr(layer, "nf") else weight.shape[0]
    layer.bias = nn.Parameter(torch.zeros(out, dtype=weight.dtype, device=weight.device),
                              requires_grad=weight.requires_grad)
