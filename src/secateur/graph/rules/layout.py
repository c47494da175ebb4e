"""Layout ops: views and reshapes regroup dims, permutes move them, expands add broadcast dims."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from torch import fx

from ..spaces import Segment
from ..table import RuleTable
from ..walk import ParamRef
from .common import scale

if TYPE_CHECKING:
    from ..walk import Value, Walk


def reshape_groups(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of dims of ``a`` and ``b`` with equal products (how a view regroups dims).

    >>> reshape_groups((2, 12, 5), (2, 3, 4, 5))
    [([0], [0]), ([1], [1, 2]), ([2], [3])]
    """
    groups, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        gi, gj, pa, pb = [], [], 1, 1
        if i < len(a):
            gi, pa, i = [i], a[i], i + 1
        if j < len(b):
            gj, pb, j = [j], b[j], j + 1
        while pa != pb:
            if pa < pb and i < len(a):
                gi.append(i)
                pa, i = pa * a[i], i + 1
            elif pb < pa and j < len(b):
                gj.append(j)
                pb, j = pb * b[j], j + 1
            else:
                return None
        groups.append((gi, gj))
    return groups


def _split_dim(walk: Walk, node: fx.Node, segs, sizes: list[int], outs: list[int], out: Value) -> None:
    """One tracked dim becomes several (e.g. ``H*D -> (H, D)``): channels go to the outermost."""
    segs = walk.spaces.resolve(segs)
    big = [o for o, s in zip(outs, sizes, strict=True) if s != 1]
    inner = math.prod(sizes[outs.index(big[0]) + 1 :]) if big else 1
    if len(big) <= 1:
        if big:
            out[big[0]] = segs
        return
    if len(segs) == 1 and segs[0].factor % inner == 0:
        out[big[0]] = (Segment(segs[0].space, segs[0].factor // inner),)
    elif len(segs) == 1 and segs[0].factor == 1 and walk.spaces.size[segs[0].space] % inner == 0:
        size = walk.spaces.size[segs[0].space] // inner
        (head,) = walk.spaces.refine(segs[0].space, [(size, inner)], ["heads"])
        out[big[0]] = (Segment(head.space),)
    else:
        walk.block(segs, f"{walk.label(node)} splits a dim whose channels do not align")


def _regroup(walk: Walk, node: fx.Node, gi: list[int], go: list[int], out: Value) -> None:
    """Carry the channels of input dims ``gi`` to output dims ``go`` (one group of ``reshape_groups``)."""
    a, b, value = walk.shape(node.args[0]), walk.shape(node), walk.value(node.args[0])
    tracked = [d for d in gi if d in value]
    if not tracked:
        return
    if len(go) == 1 and len(tracked) == 1 and all(a[k] == 1 for k in gi if k < tracked[0]):
        out[go[0]] = scale(value[tracked[0]], math.prod(a[k] for k in gi if k > tracked[0]))
    elif len(gi) == 1:
        _split_dim(walk, node, value[gi[0]], [b[o] for o in go], go, out)
    else:
        for d in tracked:
            walk.block(value[d], f"{walk.label(node)} interleaves that dim with another")


def _reshape_param(walk: Walk, node: fx.Node, groups: list[tuple[list[int], list[int]]]) -> None:
    """A view of a parameter that keeps each of its dims whole is still that parameter."""
    ref = walk.param(node.args[0])
    if ref is None:
        return
    a, b = walk.shape(node.args[0]), walk.shape(node)
    pdims: list[int | None] = [None] * len(b)
    for gi, go in groups:
        big_in, big_out = [d for d in gi if a[d] != 1], [o for o in go if b[o] != 1]
        if len(big_in) == 1 and len(big_out) == 1:
            pdims[big_out[0]] = ref.dims[big_in[0]]
    if len([d for d in ref.dims if d is not None]) == len([p for p in pdims if p is not None]):
        walk.params[node] = ParamRef(ref.name, tuple(pdims))


def _reshape(walk: Walk, node: fx.Node) -> Value:
    groups = reshape_groups(walk.shape(node.args[0]), walk.shape(node))
    if groups is None:
        return walk.unknown(node, "an unpaired reshape")
    out: Value = {}
    for gi, go in groups:
        _regroup(walk, node, gi, go, out)
    _reshape_param(walk, node, groups)
    return out


def _move_dims(walk: Walk, node: fx.Node, order: list[int]) -> Value:
    """Output dim ``i`` is input dim ``order[i]``."""
    value, ref = walk.value(node.args[0]), walk.param(node.args[0])
    if ref is not None:
        walk.params[node] = ParamRef(ref.name, tuple(ref.dims[d] for d in order))
    return {i: value[d] for i, d in enumerate(order) if d in value}


def _permute(walk: Walk, node: fx.Node) -> Value:
    rank = len(walk.shape(node))
    return _move_dims(walk, node, [d % rank for d in node.args[1]])


def _transpose(walk: Walk, node: fx.Node) -> Value:
    rank = len(walk.shape(node))
    d0, d1 = (node.args[1] % rank, node.args[2] % rank) if len(node.args) > 2 else (0, 1)
    order = list(range(rank))
    order[d0], order[d1] = d1, d0
    return _move_dims(walk, node, order)


def _reverse(walk: Walk, node: fx.Node) -> Value:
    """``x.T`` (aten ``numpy_T``): every dim reversed; for a weight, a plain transpose."""
    return _move_dims(walk, node, list(reversed(range(len(walk.shape(node))))))


def _expand(walk: Walk, node: fx.Node) -> Value:
    """Broadcast dims are added in front; the tracked dims keep their channels."""
    a, b = walk.shape(node.args[0]), walk.shape(node)
    shift, value, ref = len(b) - len(a), walk.value(node.args[0]), walk.param(node.args[0])
    if ref is not None:
        walk.params[node] = ParamRef(ref.name, (None,) * shift + ref.dims)
    return {d + shift: s for d, s in value.items()}


def _repeat_interleave(walk: Walk, node: fx.Node) -> Value:
    """``repeat_interleave(x, r, dim)`` with an int ``r``: each channel of ``dim`` spans ``r`` positions."""
    repeats, dim = walk.arg(node, 1, "repeats"), walk.arg(node, 2, "dim")
    dim = 0 if dim is None and len(walk.shape(node)) == 1 else dim  # 1-D: flattening changes nothing
    if not isinstance(repeats, int) or dim is None:
        return walk.unknown(node, "repeats given as a tensor, or no dim (a flattening repeat)")
    value = dict(walk.value(node.args[0]))
    dim %= len(walk.shape(node))
    if dim in value:
        value[dim] = scale(value[dim], repeats)
    return value


def _repeat(walk: Walk, node: fx.Node) -> Value:
    """``x.repeat(sizes)`` tiles dims: a tiled dim holds its channels once per tile (JetMoE's key heads, one
    copy per expert), like ``cat`` of the same tensor."""
    sizes, value = list(node.args[1]), walk.value(node.args[0])
    shift = len(sizes) - len(walk.shape(node.args[0]))
    return {d + shift: tuple(segs) * sizes[d + shift] for d, segs in value.items()}


LAYOUT = RuleTable([
    (("view", "reshape", "_unsafe_view", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as"), _reshape),
    ("permute", _permute),
    (("transpose", "t", "swapaxes"), _transpose),
    ("numpy_T", _reverse),
    (("expand", "expand_as"), _expand),
    ("repeat_interleave", _repeat_interleave),
    ("repeat", _repeat),
])
