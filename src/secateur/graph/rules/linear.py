"""Matrix products: ``linear`` / ``addmm`` with a weight make a new space; a product of two activations
(attention scores) ties the contracted dims and the batch dims."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

from ..table import RuleTable
from .common import param_member, tie_or_block

if TYPE_CHECKING:
    from ..walk import Value, Walk


def _weight_matmul(walk: Walk, node: fx.Node, x: fx.Node, weight: fx.Node, in_dim: int, out_dim: int,
                   bias: object = None) -> Value:
    """``x @ W``: x's last dim is W's ``in_dim``; the output's last dim is a new space from ``out_dim``."""
    ref = walk.param(weight)
    rank = len(walk.shape(x))
    value = walk.value(x)
    out = {d: s for d, s in value.items() if d != rank - 1}
    if ref is None:
        walk.block(value.get(rank - 1), f"{walk.label(node)} multiplies by a computed weight")
        return out
    walk.member(value.get(rank - 1), ref.name, ref.dims[in_dim], "in")
    seg = walk.produce(ref, out_dim, walk.shape(weight)[out_dim])
    if bias is not None:
        param_member(walk, node, bias, (seg,))
    out[len(walk.shape(node)) - 1] = (seg,)
    return out


def _linear(walk: Walk, node: fx.Node) -> Value:
    return _weight_matmul(walk, node, node.args[0], node.args[1], 1, 0, walk.arg(node, 2, "bias"))


def _addmm(walk: Walk, node: fx.Node) -> Value:
    return _weight_matmul(walk, node, node.args[1], node.args[2], 0, 1, node.args[0])


def _batch_dims(walk: Walk, node: fx.Node, out: Value) -> None:
    """The leading (batch) dims of ``a @ b`` broadcast: where both have one of size > 1, they are tied."""
    a, b = node.args[0], node.args[1]
    sa, sb, so = walk.shape(a), walk.shape(b), walk.shape(node)
    va, vb = walk.value(a), walk.value(b)
    for od in range(len(so) - 2):
        da, db = od - (len(so) - len(sa)), od - (len(so) - len(sb))
        segs = [v.get(d) if d >= 0 and s[d] > 1 else None for v, d, s in ((va, da, sa), (vb, db, sb))]
        sizes = [s[d] if d >= 0 else 1 for d, s in ((da, sa), (db, sb))]
        if min(sizes) > 1:
            tied = tie_or_block(walk, node, *segs)
            if tied is not None:
                out[od] = tied
        elif segs[0] or segs[1]:
            out[od] = segs[0] or segs[1]


def _matmul(walk: Walk, node: fx.Node) -> Value:
    a, b = node.args[0], node.args[1]
    if walk.param(b) is not None and len(walk.shape(b)) == 2:
        return _weight_matmul(walk, node, a, b, 0, 1)
    sa, sb, so = walk.shape(a), walk.shape(b), walk.shape(node)
    if len(sa) < 2 or len(sb) < 2 or walk.param(a) is not None:
        return walk.unknown(node, "a matmul of this form")
    va, vb = walk.value(a), walk.value(b)
    tie_or_block(walk, node, va.get(len(sa) - 1), vb.get(len(sb) - 2))
    out: Value = {}
    _batch_dims(walk, node, out)
    if len(sa) - 2 in va:
        out[len(so) - 2] = va[len(sa) - 2]
    if len(sb) - 1 in vb:
        out[len(so) - 1] = vb[len(sb) - 1]
    return out


LINEAR = RuleTable([("linear", _linear), ("addmm", _addmm), (("matmul", "mm", "bmm"), _matmul)])
