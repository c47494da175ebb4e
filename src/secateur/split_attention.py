"""``SplitMultiheadAttention``: ``nn.MultiheadAttention`` with separate q/k/v/out layers and sizes read from them.

``nn.MultiheadAttention`` asserts that its input width is ``embed_dim`` and that ``head_dim * num_heads ==
embed_dim``, so no structured plan can narrow it. This module computes the same function (same signature,
same results to float rounding) from four ``nn.Linear`` layers, views to ``(batch, heads, seq, head_dim)``
and ``scaled_dot_product_attention`` (or an explicit softmax when weights are asked for), which the graph
engine follows: heads and every width around the module prune with the existing rules. Only ``head_dim``
is stored; ``num_heads``, ``embed_dim``, ``kdim`` and ``vdim`` are read from the weights, so a cut can never
leave them stale.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _float_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A boolean mask (True = masked out) as an additive float mask, as ``nn.MultiheadAttention`` reads it."""
    if mask is None or mask.is_floating_point():
        return None if mask is None else mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))


class SplitMultiheadAttention(nn.Module):
    """Multi-head attention as ``nn.MultiheadAttention`` computes it, from separate ``q_proj``, ``k_proj``,
    ``v_proj`` and ``out_proj`` layers (built from one with :meth:`from_mha`).

    >>> mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    >>> split = SplitMultiheadAttention.from_mha(mha).eval()
    >>> x = torch.randn(3, 5, 8)
    >>> torch.allclose(split(x, x, x)[0], mha(x, x, x)[0], atol=1e-6)
    True
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 kdim: int | None = None, vdim: int | None = None, batch_first: bool = False) -> None:
        super().__init__()
        self.head_dim, self.dropout, self.batch_first = embed_dim // num_heads, dropout, batch_first
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(kdim or embed_dim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(vdim or embed_dim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> SplitMultiheadAttention:
        """The same attention as ``mha``, its weights copied (``in_proj_weight`` split, or the separate ones)."""
        split = cls(mha.embed_dim, mha.num_heads, mha.dropout, mha.in_proj_bias is not None, mha.kdim, mha.vdim,
                    mha.batch_first).to(device=mha.out_proj.weight.device, dtype=mha.out_proj.weight.dtype)
        weights = (mha.in_proj_weight.chunk(3) if mha.in_proj_weight is not None else
                   (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight))
        biases = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None,) * 3
        with torch.no_grad():
            for layer, w, b in zip((split.q_proj, split.k_proj, split.v_proj), weights, biases, strict=True):
                layer.weight.copy_(w)
                if b is not None:
                    layer.bias.copy_(b)
            split.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.out_proj.bias is not None:
                split.out_proj.bias.copy_(mha.out_proj.bias)
        split.train(mha.training)
        return split

    @property
    def num_heads(self) -> int:
        return self.q_proj.out_features // self.head_dim

    @property
    def embed_dim(self) -> int:
        """The query's width (after pruning, the output's width ``out_proj.out_features`` may differ)."""
        return self.q_proj.in_features

    @property
    def kdim(self) -> int:
        return self.k_proj.in_features

    @property
    def vdim(self) -> int:
        return self.v_proj.in_features

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, batch_first={self.batch_first}"

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, seq, heads * dim) -> (batch, heads, seq, dim)``."""
        return x.view(x.shape[0], x.shape[1], self.num_heads, -1).transpose(1, 2)

    def _mask(self, key_padding_mask: torch.Tensor | None, attn_mask: torch.Tensor | None, batch: int,
              dtype: torch.dtype) -> torch.Tensor | None:
        """One additive mask broadcastable to ``(batch, heads, tgt, src)``."""
        attn = _float_mask(attn_mask, dtype)
        if attn is not None:
            attn = attn.view(1, 1, *attn.shape) if attn.dim() == 2 else attn.view(batch, -1, *attn.shape[1:])
        padding = _float_mask(key_padding_mask, dtype)
        if padding is not None:
            padding = padding.view(batch, 1, 1, -1)
            attn = padding if attn is None else attn + padding
        return attn

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``nn.MultiheadAttention.forward``: ``(output, weights averaged over heads | per head | None)``."""
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint (as nn.MultiheadAttention)")
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(value))
        causal = is_causal and key_padding_mask is None and not need_weights
        mask = None if causal else self._mask(key_padding_mask, attn_mask, q.shape[0], q.dtype)
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            scores = (q * math.sqrt(1.0 / q.shape[-1])) @ k.transpose(-2, -1)
            weights = F.softmax(scores if mask is None else scores + mask, dim=-1)
            heads = (F.dropout(weights, p=dropout) if dropout > 0.0 else weights) @ v
        else:
            weights, heads = None, F.scaled_dot_product_attention(q, k, v, mask, dropout, causal)
        out = self.out_proj(heads.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1))
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        if not batched:
            return out.squeeze(0), None if weights is None else weights.squeeze(0)
        return (out if self.batch_first else out.transpose(0, 1)), weights
