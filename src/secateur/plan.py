"""A pruning plan is data: which indices leave which tensor dimension, and which weights are masked.

It can be printed, saved as JSON, and replayed on a fresh model (``apply_plan``): that is how
``secateur.load`` rebuilds pruned shapes before loading weights.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Plan:
    """``cuts[tensor][dim]`` lists indices removed (original coordinates); ``masks[tensor]`` a sparsity;
    ``blocks`` names whole blocks removed (numbered as before removal; cuts name tensors after it)."""

    cuts: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    masks: dict[str, float] = field(default_factory=dict)
    blocks: list[str] = field(default_factory=list)

    def add_cut(self, tensor: str, dim: int, indices: list[int]) -> None:
        """Record that ``indices`` leave dimension ``dim`` of ``tensor`` (merged with earlier cuts)."""
        dims = self.cuts.setdefault(tensor, {})
        dims[dim] = sorted(set(dims.get(dim, [])) | set(indices))

    def is_empty(self) -> bool:
        return not any(i for dims in self.cuts.values() for i in dims.values()) and not self.masks and not self.blocks

    def to_dict(self) -> dict:
        cuts = {t: {str(d): i for d, i in dims.items() if i} for t, dims in self.cuts.items()}
        return {"cuts": {t: d for t, d in cuts.items() if d}, "masks": dict(self.masks), "blocks": list(self.blocks)}

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        cuts = {t: {int(d): list(i) for d, i in dims.items()} for t, dims in data.get("cuts", {}).items()}
        return cls(cuts=cuts, masks=dict(data.get("masks", {})), blocks=list(data.get("blocks", [])))


def _owner(model: nn.Module, tensor: str) -> tuple[nn.Module, str]:
    path, _, leaf = tensor.rpartition(".")
    module = model.get_submodule(path) if path else model
    if leaf not in module._parameters and leaf not in module._buffers:
        raise KeyError(f"{tensor!r} is not a parameter or buffer of the model")
    return module, leaf


def _keep_index(size: int, drop: list[int]) -> torch.Tensor:
    keep = torch.ones(size, dtype=torch.bool)
    keep[drop] = False
    return keep.nonzero().flatten()


def per_group(module: nn.Module) -> int | None:
    """Channels per group of a grouped conv or GroupNorm, read before its tensors are sliced."""
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
        return module.out_channels // module.groups
    if isinstance(module, nn.GroupNorm):
        return module.num_channels // module.num_groups
    return None


def sync_module_attributes(module: nn.Module, per_group: int | None = None) -> None:
    """Make a module's size attributes agree with its (sliced) tensors."""
    w = module._parameters.get("weight")
    if isinstance(module, nn.RNNBase):
        module.hidden_size = module.weight_hh_l0.shape[1]
        module.input_size = module.weight_ih_l0.shape[1]
        module._init_flat_weights()
    elif w is None:
        return
    elif isinstance(module, nn.modules.conv._ConvNd):
        if per_group:
            module.groups = w.shape[0] // per_group
        if module.transposed:
            module.in_channels, module.out_channels = w.shape[0], w.shape[1] * module.groups
        else:
            module.out_channels, module.in_channels = w.shape[0], w.shape[1] * module.groups
    elif isinstance(module, nn.Linear):
        module.out_features, module.in_features = w.shape
    elif isinstance(module, nn.GroupNorm):
        module.num_groups, module.num_channels = w.shape[0] // (per_group or 1), w.shape[0]
    elif isinstance(module, nn.modules.batchnorm._NormBase):
        module.num_features = w.shape[0]
    elif isinstance(module, nn.LayerNorm | getattr(nn, "RMSNorm", nn.LayerNorm)):
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


def apply_cuts(model: nn.Module, plan: Plan) -> None:
    """Slice every tensor named in ``plan.cuts`` (new tensors; nothing edited in place)."""
    owners = tensor_owners(model)
    touched: dict[nn.Module, int | None] = {}
    for tensor, dims in plan.cuts.items():
        module, leaf = _owner(model, tensor)
        old = getattr(module, leaf)
        new = old.detach()
        for dim, drop in sorted(dims.items()):
            if drop:
                new = new.index_select(dim, _keep_index(old.shape[dim], drop).to(new.device))
        new = nn.Parameter(new.clone(), requires_grad=old.requires_grad) if leaf in module._parameters else new.clone()
        for holder, name in owners[id(old)]:
            (holder._parameters if name in holder._parameters else holder._buffers)[name] = new
            touched.setdefault(holder, per_group(holder))
    for module, channels_per_group in touched.items():
        sync_module_attributes(module, channels_per_group)
