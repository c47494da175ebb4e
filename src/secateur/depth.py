"""Depth pruning: remove whole residual blocks from stacks of identical blocks (``units=("blocks",)``).

One pass over the calibration batches (or the example inputs) streams, for every block, the cosine
between the hidden states entering and leaving it (ShortGPT's block influence, Men et al. 2024) and the
last token's hidden state at every block boundary (Gromov et al. 2024's angular distance between
blocks ``l`` and ``l + n``). The criterion decides from them which blocks go (``Criterion.choose_blocks``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils import _pytree as pytree

from .errors import PruningError
from .inputs import Inputs
from .progress import progress_bar

LAYER_FIELDS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def block_stacks(model: nn.Module) -> dict[str, nn.ModuleList]:
    """ModuleLists of two or more blocks of one class (transformer layers, ResNet-style stages)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 1
            and len({type(b) for b in m}) == 1}


def _first_tensor(x: object) -> torch.Tensor | None:
    return next((t for t in pytree.tree_leaves(x) if isinstance(t, torch.Tensor) and t.is_floating_point()), None)


@dataclass
class BlockStats:
    """What one calibration pass measured on a stack of ``size`` blocks: per block, the summed cosine
    between its input and output over tokens; per boundary (``size + 1``), each sample's last-token state.

    >>> s = BlockStats(2)
    >>> s.add(0, torch.ones(1, 3, 4), torch.ones(1, 3, 4), last_output=False)
    >>> s.influence()[0].item()
    0.0
    """

    size: int
    cos_sum: torch.Tensor = field(init=False)
    tokens: torch.Tensor = field(init=False)
    last: list[list[torch.Tensor]] = field(init=False)

    def __post_init__(self) -> None:
        self.cos_sum = torch.zeros(self.size, dtype=torch.float64)
        self.tokens = torch.zeros(self.size, dtype=torch.float64)
        self.last = [[] for _ in range(self.size + 1)]

    def add(self, index: int, x: torch.Tensor, y: torch.Tensor, last_output: bool) -> None:
        """Fold in block ``index``'s input ``x`` and output ``y`` for one batch."""
        x, y = x.detach().float(), y.detach().float()
        cos = nn.functional.cosine_similarity(x.flatten(0, -2), y.flatten(0, -2), dim=-1)
        self.cos_sum[index] += float(cos.sum())
        self.tokens[index] += cos.numel()
        final = (lambda t: t[:, -1]) if x.dim() == 3 else (lambda t: t.flatten(1))  # noqa: E731
        self.last[index].append(final(x))
        if last_output:
            self.last[index + 1].append(final(y))

    def influence(self) -> torch.Tensor:
        """ShortGPT's ``1 - mean cos(input, output)`` per block (NaN where a block never ran)."""
        return (1 - self.cos_sum / self.tokens).float()

    def angular(self, n: int) -> torch.Tensor:
        """For every start ``l``: the mean over samples of ``arccos(cos(h_l, h_{l+n})) / pi`` at the last token."""
        states = [torch.cat(s) if s else None for s in self.last]
        out = []
        for start in range(self.size - n + 1):
            a, b = states[start], states[start + n]
            if a is None or b is None:
                out.append(float("inf"))
                continue
            cos = nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1, 1)
            out.append(float(torch.arccos(cos).mean() / math.pi))
        return torch.tensor(out)


def block_statistics(model: nn.Module, inputs: Iterable[Inputs], progress: bool = False) -> dict[str, BlockStats]:
    """Stream every stack's :class:`BlockStats` over ``inputs`` (forward passes only)."""
    stats = {name: BlockStats(len(stack)) for name, stack in block_stacks(model).items()}
    hooks = []

    def hook(stack: str, index: int):
        def fn(module, args, kwargs, output):
            x, y = _first_tensor((args, kwargs)), _first_tensor(output)
            if x is not None and y is not None and x.shape == y.shape:
                stats[stack].add(index, x, y, last_output=index == stats[stack].size - 1)
        return fn

    for name, stack in block_stacks(model).items():
        hooks += [block.register_forward_hook(hook(name, i), with_kwargs=True) for i, block in enumerate(stack)]
    try:
        with torch.no_grad():
            for item in progress_bar(inputs, "block statistics", enabled=progress):
                item.call(model)
    finally:
        for h in hooks:
            h.remove()
    return stats


def blocks_by_fraction(criterion, stats: dict[str, BlockStats], sparsity: float) -> list[str]:
    """``floor(sparsity * n)`` blocks of each stack of ``n``, as the criterion chooses."""
    return sorted(f"{name}.{i}" for name, s in stats.items()
                  for i in criterion.choose_blocks(s, math.floor(sparsity * s.size)))


def blocks_by_count(criterion, stats: dict[str, BlockStats], count: int) -> list[str]:
    """``count`` blocks in all: from the one stack, or the lowest-scored of all stacks (one block per stack stays)."""
    if len(stats) == 1:
        name, s = next(iter(stats.items()))
        return [f"{name}.{i}" for i in criterion.choose_blocks(s, count)]
    if criterion.contiguous:
        raise PruningError(f"criterion {criterion.name!r} removes a run of consecutive blocks from one stack, and "
                           f"this model has {len(stats)} stacks ({', '.join(stats)}); use 'block_influence'")
    pooled = sorted((float(v), name, i) for name, s in stats.items() for i, v in enumerate(criterion.block_scores(s)))
    left = {name: s.size for name, s in stats.items()}
    chosen = []
    for _, name, i in pooled:
        if len(chosen) < count and left[name] > 1:
            chosen.append(f"{name}.{i}")
            left[name] -= 1
    return sorted(chosen)


def removable_blocks(stats: dict[str, BlockStats]) -> int:
    """How many blocks can go in all (one stays in each stack)."""
    return sum(s.size - 1 for s in stats.values())


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
        for field_name in LAYER_FIELDS:
            if config is not None and getattr(config, field_name, None) == len(old):
                setattr(config, field_name, len(kept))
        if config is not None and isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = [t for i, t in enumerate(config.layer_types) if i not in drop]
