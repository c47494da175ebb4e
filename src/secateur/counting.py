"""Exact counts: parameters, non-zero parameters and multiply-accumulates (MACs).

MACs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts every matmul and
convolution that runs (attention scores included, not only those inside modules). Counting works
on meta-device copies, so a plan's effect can be predicted without touching real weights.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .inputs import as_inputs
from .transaction import eval_mode


def _unique_tensors(model: nn.Module) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    for p in model.parameters():
        seen.setdefault(id(p), p)
    return list(seen.values())


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared ones counted once).

    >>> count_params(nn.Linear(3, 2))
    8
    """
    return sum(p.numel() for p in _unique_tensors(model))


def count_nonzero_params(model: nn.Module) -> int:
    """Number of parameters that are not zero, reading masked weights through their masks."""
    total = 0
    masked_originals = set()
    for module in model.modules():
        if hasattr(module, "parametrizations") and "weight" in module.parametrizations:
            total += int(torch.count_nonzero(module.weight.detach()))
            masked_originals.add(id(module.parametrizations["weight"].original))
    return total + sum(int(torch.count_nonzero(p.detach())) for p in _unique_tensors(model)
                       if id(p) not in masked_originals)


def count_macs(model: nn.Module, example_inputs: object) -> int:
    """Multiply-accumulates of one forward pass on ``example_inputs`` (the whole batch).

    >>> count_macs(nn.Linear(3, 2), (torch.randn(4, 3),))
    24
    """
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), eval_mode(model), counter:
        as_inputs(example_inputs).call(model)
    return counter.get_total_flops() // 2


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose tensors live on the meta device (shapes only, no data)."""
    memo: dict[int, object] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        meta = t.detach().to("meta")
        memo[id(t)] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) else meta
    return copy.deepcopy(model, memo)
