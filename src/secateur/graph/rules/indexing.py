"""Indexing ops: slices and selections take part of a dim, cat joins tensors, split cuts one apart."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from torch import fx

from ..spaces import Segment
from ..table import RuleTable
from ..walk import ParamRef

if TYPE_CHECKING:
    from ..walk import Value, Walk


def _slice(walk: Walk, node: fx.Node) -> Value:
    src = node.args[0]
    shape, value = walk.shape(src), dict(walk.value(src))
    dim = walk.arg(node, 1, "dim", 0) % len(shape)
    if dim in value and walk.shape(node)[dim] != shape[dim]:
        walk.block(value.pop(dim), f"{walk.label(node)} takes part of that dim")
    return value


def _select(walk: Walk, node: fx.Node) -> Value:
    src = node.args[0]
    dim = node.args[1] % len(walk.shape(src))
    value, ref = walk.value(src), walk.param(src)
    walk.block(value.get(dim), f"{walk.label(node)} picks one channel of that dim")
    if ref is not None:  # one expert of a fused MoE weight is still that weight
        walk.params[node] = ParamRef(ref.name, ref.dims[:dim] + ref.dims[dim + 1:])
    return {d - (d > dim): s for d, s in value.items() if d != dim}


def _cat_parts(walk: Walk, node: fx.Node, tensors: list[fx.Node], dim: int) -> tuple[Segment, ...]:
    """The joined dim: every input's segments in order (an untracked input adds a blocked space)."""
    parts: list[Segment] = []
    for t in tensors:
        segs = walk.value(t).get(dim)
        if segs is None:
            space = walk.spaces.new(walk.shape(t)[dim])
            walk.spaces.block(space, f"{walk.label(node)} concatenates an untracked input")
            segs = (Segment(space),)
        parts.extend(segs)
    return tuple(parts)


def _cat_alongside(walk: Walk, node: fx.Node, tensors: list[fx.Node], d: int) -> tuple[Segment, ...] | None:
    """Another dim ``d``: the inputs' channels there are the same channels, or are blocked."""
    seen = [walk.value(t).get(d) for t in tensors]
    tracked = [s for s in seen if s is not None]
    params = [walk.param(t) for t, s in zip(tensors, seen, strict=True) if s is None]
    if not tracked:
        return None
    if not all(r is not None and r.dims[d] is not None for r in params):
        for s in tracked:
            walk.block(s, f"{walk.label(node)} joins tracked and untracked inputs")
        return None
    for s in tracked[1:]:
        walk.tie(tracked[0], s, node)
    for r in params:  # e.g. a class token concatenated in front of patch embeddings
        walk.member(tracked[0], r.name, r.dims[d], "norm")
    return tracked[0]


def _cat(walk: Walk, node: fx.Node) -> Value:
    tensors = [t for t in node.args[0] if walk.shape(t) and math.prod(walk.shape(t)) > 0]
    rank = len(walk.shape(node))
    dim = walk.arg(node, 1, "dim", 0) % rank
    parts = _cat_parts(walk, node, tensors, dim)
    out: Value = {}
    for d in range(rank):
        segs = _cat_alongside(walk, node, tensors, d) if d != dim else None
        if segs is not None:
            out[d] = segs
    out[dim] = parts
    return out


def _pieces(walk: Walk, node: fx.Node, sizes: list[int], dim: int) -> list[Value]:
    """Split ``dim`` into pieces of ``sizes``: a single space is refined; segments must align with pieces."""
    value = walk.value(node.args[0])
    rest = {d: s for d, s in value.items() if d != dim}
    if dim not in value:
        return [dict(rest) for _ in sizes]
    segs = walk.spaces.resolve(value[dim])
    if len(segs) == 1 and segs[0].factor == 1 and walk.spaces.size[segs[0].space] == sum(sizes) and len(sizes) > 1:
        parts = walk.spaces.refine(segs[0].space, [(s, 1) for s in sizes])
        return [{**rest, dim: (p,)} for p in parts]
    pos, by_start = 0, {}
    for s in segs:
        by_start[pos] = s
        pos += walk.spaces.size[s.space] * s.factor
    out, pos = [], 0
    for size in sizes:
        if pos in by_start and walk.spaces.size[by_start[pos].space] * by_start[pos].factor == size:
            out.append({**rest, dim: (by_start[pos],)})
        else:
            walk.block(segs, f"{walk.label(node)} splits channels across pieces")
            return [dict(rest) for _ in sizes]
        pos += size
    return out


def _split(walk: Walk, node: fx.Node) -> list[Value]:
    shape = walk.shape(node.args[0])
    name = node.target.overloadpacket.__name__
    dim = walk.arg(node, 1 if name == "unbind" else 2, "dim", 0) % len(shape)
    if name == "unbind":
        walk.block(walk.value(node.args[0]).get(dim), f"{walk.label(node)} unbinds that dim")
        return [{d - (d > dim): s for d, s in walk.value(node.args[0]).items() if d != dim}] * shape[dim]
    sizes = [int(v.shape[dim]) for v in node.meta["val"]]
    return _pieces(walk, node, sizes, dim)


def _stack(walk: Walk, node: fx.Node) -> Value:
    """``stack`` adds a dim; the inputs' channels on each other dim are the same channels."""
    tensors = list(node.args[0])
    rank = len(walk.shape(tensors[0]))
    dim = walk.arg(node, 1, "dim", 0) % (rank + 1)
    out: Value = {}
    for d in range(rank):
        segs = _cat_alongside(walk, node, tensors, d)
        if segs is not None:
            out[d + (d >= dim)] = segs
    return out


def _glu(walk: Walk, node: fx.Node) -> Value:
    """``glu(x, dim)`` = first half * sigmoid(second half): the halves' channels are tied, like gate and up."""
    dim = walk.arg(node, 1, "dim", -1) % len(walk.shape(node.args[0]))
    half = walk.shape(node)[dim]
    first, second = _pieces(walk, node, [half, half], dim)
    if dim in first and dim in second:
        walk.tie(first[dim], second[dim], node)
    return first


def _getitem(walk: Walk, node: fx.Node) -> Value:
    """One output of an op with several (split pieces, a norm's (out, mean, rstd))."""
    values = walk.values.get(node.args[0])
    return dict(values[node.args[1]]) if isinstance(values, list) and node.args[1] < len(values) else {}


INDEXING = RuleTable([
    ("slice", _slice),
    ("select", _select),
    (("cat", "concat"), _cat),
    ("stack", _stack),
    ("glu", _glu),
    (("split", "split_with_sizes", "chunk", "unbind"), _split),
    ("getitem", _getitem),
])
