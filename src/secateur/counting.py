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
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula, sdpa_flop_count

from .inputs import as_inputs
from .transaction import eval_mode, frozen

aten = torch.ops.aten


@register_flop_formula([aten._scaled_dot_product_flash_attention_for_cpu])
def _sdpa_cpu_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """torch counts attention only for its GPU kernels; the CPU kernel does the same matmuls."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


@register_flop_formula([aten.lstm, aten.gru], get_raw=True)
def _rnn_flop(x, second, *args, out_shape=None, **kwargs) -> int:
    """aten.lstm / aten.gru: every step multiplies the input and the state by each layer's weights."""
    packed = isinstance(second, torch.Tensor) and second.dim() == 1  # the .data overload: batch_sizes
    params, has_biases = (args[1], args[2]) if packed else (args[0], args[1])
    steps = x.shape[0] if packed else x.shape[0] * x.shape[1]
    per_layer = 4 if has_biases else 2
    return 2 * steps * sum(p.numel() for i, p in enumerate(params) if i % per_layer < 2)


@register_flop_formula([aten.mkldnn_rnn_layer], get_raw=True)
def _onednn_rnn_flop(x, w_ih, w_hh, *args, out_shape=None, **kwargs) -> int:
    """One layer of an RNN as run by oneDNN on CPU (how nn.LSTM runs in float32 here)."""
    return 2 * x.shape[0] * x.shape[1] * (w_ih.numel() + w_hh.numel())


@register_flop_formula([aten._native_multi_head_attention], get_raw=True)
def _mha_flop(query, key, value, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, *args,
              out_shape=None, **kwargs) -> int:
    """nn.MultiheadAttention's fused inference path: q/k/v and output projections, scores, weighted sum."""
    b, lq, lk = query.shape[0], query.shape[1], key.shape[1]
    projections = qkv_weight.numel() // 3 * b * (lq + 2 * lk) + proj_weight.numel() * b * lq
    return 2 * (projections + 2 * b * lq * lk * embed_dim)


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
        plists = getattr(module, "parametrizations", {})
        plist = plists["weight"] if "weight" in plists else None
        if plist is not None and hasattr(plist, "original"):  # a mask; weight norm's (g, v) are counted as they are
            total += int(torch.count_nonzero(module.weight.detach()))
            masked_originals.add(id(plist.original))
    return total + sum(int(torch.count_nonzero(p.detach())) for p in _unique_tensors(model)
                       if id(p) not in masked_originals)


def macs_and_shapes(model: nn.Module, example_inputs: object) -> tuple[int, list[tuple[int, ...]]]:
    """One forward pass: its multiply-accumulates and the shapes of every output tensor."""
    inputs = as_inputs(example_inputs)
    counter = FlopCounterMode(display=False)
    with eval_mode(model), frozen(model), counter:
        shapes = inputs.output_shapes(model)
    return counter.get_total_flops() // 2, shapes


def count_macs(model: nn.Module, example_inputs: object) -> int:
    """Multiply-accumulates of one forward pass on ``example_inputs`` (the whole batch).

    >>> count_macs(nn.Linear(3, 2), (torch.randn(4, 3),))
    24
    """
    return macs_and_shapes(model, example_inputs)[0]


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose tensors live on the meta device (shapes only, no data)."""
    memo: dict[int, object] = {}
    for t in itertools.chain(model.parameters(), model.buffers()):
        meta = t.detach().to("meta")
        memo[id(t)] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) else meta
    return copy.deepcopy(model, memo)
