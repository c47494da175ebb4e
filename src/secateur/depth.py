"""Depth pruning: remove whole residual blocks from stacks of identical blocks (``units=("blocks",)``).

A block's importance is its *block influence* (ShortGPT, Men et al. 2024): one minus the cosine
similarity between the hidden states entering and leaving it on the example inputs. Blocks that
barely change their input go first.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils import _pytree as pytree

from .inputs import Inputs

LAYER_FIELDS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def block_stacks(model: nn.Module) -> dict[str, nn.ModuleList]:
    """ModuleLists of two or more blocks of one class (transformer layers, ResNet-style stages)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 1
            and len({type(b) for b in m}) == 1}


def _first_tensor(x: object) -> torch.Tensor | None:
    return next((t for t in pytree.tree_leaves(x) if isinstance(t, torch.Tensor) and t.is_floating_point()), None)


def block_influence(model: nn.Module, inputs: Inputs) -> dict[str, float]:
    """``1 - cos(input, output)`` of every block, averaged over tokens / positions."""
    scores: dict[str, float] = {}
    hooks = []

    def hook(name: str):
        def fn(module, args, kwargs, output):
            x, y = _first_tensor((args, kwargs)), _first_tensor(output)
            if x is not None and y is not None and x.shape == y.shape:
                cos = torch.nn.functional.cosine_similarity(x.flatten(0, -2).float(), y.flatten(0, -2).float(), dim=-1)
                scores[name] = float(1 - cos.mean())
        return fn

    for stack_name, stack in block_stacks(model).items():
        for i, block in enumerate(stack):
            hooks.append(block.register_forward_hook(hook(f"{stack_name}.{i}"), with_kwargs=True))
    try:
        with torch.no_grad():
            inputs.call(model)
    finally:
        for h in hooks:
            h.remove()
    return scores


def choose_blocks(model: nn.Module, inputs: Inputs, sparsity: float) -> list[str]:
    """Names of the ``floor(sparsity * n)`` least influential blocks of each stack."""
    scores = block_influence(model, inputs)
    chosen = []
    for name, stack in block_stacks(model).items():
        ranked = sorted((scores[f"{name}.{i}"], i) for i in range(len(stack)) if f"{name}.{i}" in scores)
        chosen += [f"{name}.{i}" for _, i in ranked[: math.floor(sparsity * len(stack))]]
    return sorted(chosen)


def remove_blocks(model: nn.Module, names: list[str]) -> None:
    """Delete blocks (named in the original numbering) and renumber; Hugging Face configs follow."""
    by_stack: dict[str, set[int]] = {}
    for name in names:
        stack, _, index = name.rpartition(".")
        by_stack.setdefault(stack, set()).add(int(index))
    config = getattr(model, "config", None)
    for stack_name, drop in by_stack.items():
        parent_name, _, attr = stack_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, attr)
        kept = nn.ModuleList([b for i, b in enumerate(old) if i not in drop])
        for i, block in enumerate(kept):
            for m in block.modules():
                if hasattr(m, "layer_idx"):
                    m.layer_idx = i
        parent._modules[attr] = kept
        for field in LAYER_FIELDS:
            if config is not None and getattr(config, field, None) == len(old):
                setattr(config, field, len(kept))
        if config is not None and isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = [t for i, t in enumerate(config.layer_types) if i not in drop]
