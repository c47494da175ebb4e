"""Indexing by tensors: ``x[idx]`` (an MoE expert's weight ``w[e]``), ``index_select``, ``gather``, ``topk``,
and writes by index (``index_add``, ``index_copy``, ``scatter_add``).

Positions picked by value cannot follow a pruned channel dim, so an indexed channel dim is blocked; the
other dims keep their channels. A parameter indexed on dims that hold no channels (the expert dim of a
fused MoE weight) is still that parameter, so a Linear over ``w[e]`` prunes the fused tensor's rows for
every expert at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

from ..table import RuleTable
from ..walk import ParamRef
from .common import tie_or_block

if TYPE_CHECKING:
    from ..walk import Value, Walk


def _picked(walk: Walk, node: fx.Node, segs, what: str = "indexes that dim by value") -> None:
    walk.block(segs, f"{walk.label(node)} {what}")


def _index(walk: Walk, node: fx.Node) -> Value:
    """``x[..., i, j, ...]`` (aten ``index.Tensor``): adjacent indexed dims become the index's shape."""
    src, indices = node.args[0], list(node.args[1])
    shape, out_rank = walk.shape(src), len(walk.shape(node))
    at = [d for d, i in enumerate(indices) if i is not None]
    if not at:
        return dict(walk.value(src))
    if at != list(range(at[0], at[-1] + 1)):
        return walk.unknown(node, "tensor indices on dims that are not adjacent")
    rank = out_rank - (len(shape) - len(at))  # dims the broadcast index adds
    out: Value = {}
    for d, segs in walk.value(src).items():
        if d in at:
            _picked(walk, node, segs)
        else:
            out[d if d < at[0] else d - len(at) + rank] = segs
    ref = walk.param(src)
    if ref is not None:
        walk.params[node] = ParamRef(ref.name, (*ref.dims[:at[0]], *([None] * rank), *ref.dims[at[-1] + 1:]))
    return out


def _index_select(walk: Walk, node: fx.Node) -> Value:
    """``index_select(x, dim, idx)``: ``dim`` is picked by value; the others keep their channels."""
    src, dim = node.args[0], node.args[1] % len(walk.shape(node.args[0]))
    value = dict(walk.value(src))
    if dim in value:
        _picked(walk, node, value.pop(dim))
    return value


def _gather(walk: Walk, node: fx.Node) -> Value:
    """``gather(x, dim, idx)``: the output has the index's shape; other dims line up where sizes agree."""
    src, dim = node.args[0], node.args[1] % len(walk.shape(node.args[0]))
    a, b = walk.shape(src), walk.shape(node)
    out: Value = {}
    for d, segs in walk.value(src).items():
        if d != dim and a[d] == b[d]:
            out[d] = segs
        else:
            _picked(walk, node, segs)
    return out


def _topk(walk: Walk, node: fx.Node) -> list[Value]:
    """``topk`` / ``sort``: values and indices; the ranked dim is picked by value."""
    src = node.args[0]
    dim = walk.arg(node, 2 if node.target.overloadpacket.__name__ == "topk" else 1, "dim", -1)
    dim %= len(walk.shape(src))
    value = dict(walk.value(src))
    if dim in value:
        _picked(walk, node, value.pop(dim), "ranks that dim")
    return [value, dict(value)]


def _index_write(walk: Walk, node: fx.Node) -> Value:
    """``index_add(self, dim, idx, src)`` and kin: the result is shaped like ``self``; ``src``'s rows go to
    positions by value along ``dim``, and every other dim of ``src`` meets the same dim of ``self``."""
    target, dim = node.args[0], node.args[1] % len(walk.shape(node.args[0]))
    source = node.args[3]
    out, value = dict(walk.value(target)), walk.value(source)
    for d in range(len(walk.shape(target))):
        if d == dim:
            _picked(walk, node, value.get(d), "writes that dim by index")
        elif d in out or d in value:
            tied = tie_or_block(walk, node, out.get(d), value.get(d))
            out.pop(d, None)
            if tied is not None:
                out[d] = tied
    return out


GATHER = RuleTable([
    ("index", _index),
    ("index_select", _index_select),
    ("gather", _gather),
    (("topk", "sort"), _topk),
    (("index_add", "index_add_", "index_copy", "index_copy_", "scatter_add", "scatter_add_"), _index_write),
])
