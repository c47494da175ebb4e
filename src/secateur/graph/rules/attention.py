"""Scaled dot-product attention: heads of q, k and v are tied; with grouped-query attention each key-value
head serves ``Hq / Hk`` query heads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

from ..table import RuleTable
from .common import scale, tie_or_block

if TYPE_CHECKING:
    from ..walk import Value, Walk


def _sdpa(walk: Walk, node: fx.Node) -> Value:
    """q, k, v are ``(..., heads, seq, dim)``; with fewer k/v heads each serves ``Hq / Hk`` query heads."""
    q, k, v = node.args[:3]
    vq, vk, vv = walk.value(q), walk.value(k), walk.value(v)
    rank, hq, hk = len(walk.shape(q)), walk.shape(q)[-3], walk.shape(k)[-3]
    tie_or_block(walk, node, vk.get(rank - 3), vv.get(rank - 3))
    k_heads = vk.get(rank - 3)
    if k_heads is not None and hq != hk:
        k_heads = scale(walk.spaces.resolve(k_heads), hq // hk)
    heads = tie_or_block(walk, node, vq.get(rank - 3), k_heads)
    tie_or_block(walk, node, vq.get(rank - 1), vk.get(rank - 1))
    mask = walk.arg(node, 3, "attn_mask")
    if mask is not None and heads is not None:
        mshape = walk.shape(mask)
        if len(mshape) >= 3 and mshape[-3] > 1:
            walk.block(heads, f"{walk.label(node)} has a per-head mask")
    out = {d: s for d, s in vq.items() if d < rank - 3}
    if heads is not None:
        out[rank - 3] = heads
    if rank - 1 in vv:
        out[rank - 1] = vv[rank - 1]
    return out


ATTENTION = RuleTable([(("scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu"), _sdpa)])
