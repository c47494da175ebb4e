"""The blocks and layers the one-shot engine works on: the stack of decoder blocks, each block's
prunable Linear layers (GPT-2's Conv1D too) and their weights as ``(out, in)`` matrices."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..depth import block_stacks
from ..errors import PruningError
from ..methods.base import match


@dataclass
class Layer:
    """A prunable Linear (or GPT-2 Conv1D) of the current block."""

    name: str
    module: nn.Module


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The longest stack of identical blocks (a transformer's layers)."""
    stacks = block_stacks(model)
    if not stacks:
        raise PruningError("one-shot pruning needs a stack of identical blocks (an nn.ModuleList of layers)")
    return max(stacks.items(), key=lambda kv: len(kv[1]))


def is_conv1d(module: nn.Module) -> bool:
    return type(module).__name__ == "Conv1D"


def block_layers(block: nn.Module, prefix: str, ignore: tuple[str, ...]) -> tuple[list[Layer], dict[str, str]]:
    """The block's prunable layers, and those its ignore patterns skip."""
    layers, skipped = [], {}
    for name, m in block.named_modules():
        full = f"{prefix}.{name}"
        if isinstance(m, nn.Linear) or is_conv1d(m):
            if match(full, ignore):
                skipped[full] = "matches ignore="
            else:
                layers.append(Layer(full, m))
    return layers, skipped


def weight_of(module: nn.Module) -> torch.Tensor:
    """The effective weight as ``(out, in)`` float32 (GPT-2's Conv1D stores ``(in, out)``)."""
    w = module.weight.detach()
    return (w.T if is_conv1d(module) else w).float()


def in_features(module: nn.Module) -> int:
    return module.weight.shape[0 if is_conv1d(module) else 1]


def device_of(block: nn.Module) -> torch.device:
    return next((p.device for p in block.parameters()), torch.device("cpu"))


def exact(t: torch.Tensor) -> torch.autocast:
    """No autocast on ``t``'s device: statistics and weight updates stay in their own dtype (float32), even
    inside a forward that runs under autocast."""
    return torch.autocast(t.device.type, enabled=False)
