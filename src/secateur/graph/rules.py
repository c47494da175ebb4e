"""Coupling rules for layout and element-wise ATen ops: how channel spaces move from inputs to output.

A rule takes the walk and the node and returns the output's value (or a list of values for ops
with several outputs). Whatever a rule cannot carry forward it must block. Ops with weights live
in ``layers.py``. Register rules for your own ops (``torch.library`` custom ops) with
:func:`register_rule`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from torch import fx

from .capture import ParamRef
from .spaces import Segment

if TYPE_CHECKING:
    from .capture import Value, Walk

Rule = Callable[["Walk", fx.Node], "Value | list[Value]"]
RULES: dict[str, Rule] = {}


def register_rule(*op_names: str) -> Callable[[Rule], Rule]:
    """Decorator: use ``fn(walk, node) -> value`` for ATen ops with these names (``"linear"``, ...).

    >>> @register_rule("my_identity")
    ... def _identity(walk, node):
    ...     return dict(walk.value(node.args[0]))
    """

    def deco(fn: Rule) -> Rule:
        for name in op_names:
            RULES[name] = fn
        return fn

    return deco


def rule_for(name: str) -> Rule | None:
    from . import layers  # noqa: F401  (registers the weight rules)

    return RULES.get(name)


def _scale(segs: tuple[Segment, ...], by: int) -> tuple[Segment, ...]:
    return tuple(Segment(s.space, s.factor * by) for s in segs)


# ---------------------------------------------------------------- no shape change
_UNARY = ("relu", "relu_", "gelu", "gelu_", "silu", "silu_", "sigmoid", "tanh", "hardtanh", "hardtanh_",
          "hardswish", "hardswish_", "hardsigmoid", "leaky_relu", "elu", "softplus", "mish", "neg", "exp", "log",
          "abs", "sqrt", "rsqrt", "reciprocal", "square", "erf", "sin", "cos", "clamp", "clamp_min", "clamp_max",
          "dropout", "alias", "clone", "contiguous", "detach", "to", "_to_copy", "lift_fresh_copy", "softmax",
          "_softmax", "log_softmax", "cumsum", "type_as", "sign", "round", "floor", "logical_not", "bitwise_not")


@register_rule(*_UNARY)
def _unary(walk: Walk, node: fx.Node) -> Value:
    ref = walk.param(node.args[0])
    if ref is not None:
        walk.params[node] = ref
    return dict(walk.value(node.args[0]))


@register_rule("add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "maximum", "minimum", "pow",
               "where", "masked_fill", "eq", "ne", "lt", "gt", "le", "ge", "logical_and", "logical_or",
               "__and__", "__or__", "bitwise_and", "bitwise_or", "fmod", "remainder", "copy_")
def _elementwise(walk: Walk, node: fx.Node) -> Value:
    """Tensors meeting on one output dim share its channels; a parameter there becomes a member."""
    out_shape = walk.shape(node)
    out: Value = {}
    pending: list[tuple[int, ParamRef, int]] = []
    untracked: set[int] = set()
    for arg in (a for a in node.args if isinstance(a, fx.Node)):
        shape = walk.shape(arg)
        if shape is None:
            continue
        shift, value, ref = len(out_shape) - len(shape), walk.value(arg), walk.param(arg)
        for d, size in enumerate(shape):
            od, segs = d + shift, value.get(d)
            if size == 1 and out_shape[od] != 1:
                walk.block(segs, f"{walk.label(node)} broadcasts that dim")
            elif segs is not None:
                out[od] = walk.tie(out[od], segs, node) if od in out else segs
            elif ref is not None and ref.dims[d] is not None:
                pending.append((od, ref, ref.dims[d]))
            elif size > 1:
                untracked.add(od)
    for od in untracked & out.keys():
        walk.block(out.pop(od), f"{walk.label(node)} meets an untracked tensor")
    for od, ref, pdim in pending:
        if od in out:
            walk.member(out[od], ref.name, pdim, "norm")
    return out


# ---------------------------------------------------------------- reshapes
def reshape_groups(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pair runs of dims of ``a`` and ``b`` with equal products (how a view regroups dims)."""
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


@register_rule("view", "reshape", "_unsafe_view", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as")
def _reshape(walk: Walk, node: fx.Node) -> Value:
    src = node.args[0]
    a, b = walk.shape(src), walk.shape(node)
    groups = reshape_groups(a, b)
    value, ref = walk.value(src), walk.param(src)
    if groups is None:
        return walk.unknown(node, "an unpaired reshape")
    out: Value = {}
    pdims: list[int | None] = [None] * len(b)
    for gi, go in groups:
        big_in = [d for d in gi if a[d] != 1]
        if ref is not None and len(big_in) == 1 and len([o for o in go if b[o] != 1]) == 1:
            pdims[next(o for o in go if b[o] != 1)] = ref.dims[big_in[0]]
        tracked = [d for d in gi if d in value]
        if not tracked:
            continue
        if len(go) == 1 and len(tracked) == 1 and all(a[k] == 1 for k in gi if k < tracked[0]):
            inner = math.prod(a[k] for k in gi if k > tracked[0])
            out[go[0]] = _scale(value[tracked[0]], inner)
        elif len(gi) == 1:
            _split_dim(walk, node, value[gi[0]], [b[o] for o in go], go, out)
        else:
            for d in tracked:
                walk.block(value[d], f"{walk.label(node)} interleaves that dim with another")
    if ref is not None and len([d for d in ref.dims if d is not None]) == len([p for p in pdims if p is not None]):
        walk.params[node] = ParamRef(ref.name, tuple(pdims))
    return out


def _move_dims(walk: Walk, node: fx.Node, order: list[int]) -> Value:
    """Output dim ``i`` is input dim ``order[i]``."""
    value, ref = walk.value(node.args[0]), walk.param(node.args[0])
    if ref is not None:
        walk.params[node] = ParamRef(ref.name, tuple(ref.dims[d] for d in order))
    return {i: value[d] for i, d in enumerate(order) if d in value}


@register_rule("permute")
def _permute(walk: Walk, node: fx.Node) -> Value:
    rank = len(walk.shape(node))
    return _move_dims(walk, node, [d % rank for d in node.args[1]])


@register_rule("transpose", "t", "swapaxes")
def _transpose(walk: Walk, node: fx.Node) -> Value:
    rank = len(walk.shape(node))
    d0, d1 = (node.args[1] % rank, node.args[2] % rank) if len(node.args) > 2 else (0, 1)
    order = list(range(rank))
    order[d0], order[d1] = d1, d0
    return _move_dims(walk, node, order)


@register_rule("expand", "expand_as")
def _expand(walk: Walk, node: fx.Node) -> Value:
    a, b = walk.shape(node.args[0]), walk.shape(node)
    shift, value, ref = len(b) - len(a), walk.value(node.args[0]), walk.param(node.args[0])
    if ref is not None:
        walk.params[node] = ParamRef(ref.name, (None,) * shift + ref.dims)
    return {d + shift: s for d, s in value.items()}


@register_rule("slice")
def _slice(walk: Walk, node: fx.Node) -> Value:
    src = node.args[0]
    shape, value = walk.shape(src), dict(walk.value(src))
    dim = walk.arg(node, 1, "dim", 0) % len(shape)
    if dim in value and walk.shape(node)[dim] != shape[dim]:
        walk.block(value.pop(dim), f"{walk.label(node)} takes part of that dim")
    return value


@register_rule("select")
def _select(walk: Walk, node: fx.Node) -> Value:
    src = node.args[0]
    dim = node.args[1] % len(walk.shape(src))
    value = walk.value(src)
    walk.block(value.get(dim), f"{walk.label(node)} picks one channel of that dim")
    return {d - (d > dim): s for d, s in value.items() if d != dim}


@register_rule("cat", "concat")
def _cat(walk: Walk, node: fx.Node) -> Value:
    tensors = [t for t in node.args[0] if walk.shape(t) and math.prod(walk.shape(t)) > 0]
    rank = len(walk.shape(node))
    dim = walk.arg(node, 1, "dim", 0) % rank
    parts: list[Segment] = []
    for t in tensors:
        segs = walk.value(t).get(dim)
        if segs is None:
            space = walk.spaces.new(walk.shape(t)[dim])
            walk.spaces.block(space, f"{walk.label(node)} concatenates an untracked input")
            segs = (Segment(space),)
        parts.extend(segs)
    out: Value = {}
    for d in range(rank):
        if d == dim:
            continue
        seen = [walk.value(t).get(d) for t in tensors]
        tracked = [s for s in seen if s is not None]
        params = [walk.param(t) for t, s in zip(tensors, seen, strict=True) if s is None]
        if tracked and not all(r is not None and r.dims[d] is not None for r in params):
            for s in tracked:
                walk.block(s, f"{walk.label(node)} joins tracked and untracked inputs")
        elif tracked:
            out[d] = tracked[0]
            for s in tracked[1:]:
                walk.tie(out[d], s, node)
            for r in params:  # e.g. a class token concatenated in front of patch embeddings
                walk.member(out[d], r.name, r.dims[d], "norm")
    out[dim] = tuple(parts)
    return out


def _pieces(walk: Walk, node: fx.Node, sizes: list[int], dim: int) -> list[Value]:
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


@register_rule("split", "split_with_sizes", "chunk", "unbind")
def _split(walk: Walk, node: fx.Node) -> list[Value]:
    shape = walk.shape(node.args[0])
    name = node.target.overloadpacket.__name__
    dim = walk.arg(node, 1 if name == "unbind" else 2, "dim", 0) % len(shape)
    if name == "unbind":
        walk.block(walk.value(node.args[0]).get(dim), f"{walk.label(node)} unbinds that dim")
        return [{d - (d > dim): s for d, s in walk.value(node.args[0]).items() if d != dim}] * shape[dim]
    sizes = [int(v.shape[dim]) for v in node.meta["val"]]
    return _pieces(walk, node, sizes, dim)


@register_rule("getitem")
def _getitem(walk: Walk, node: fx.Node) -> Value:
    values = walk.values.get(node.args[0])
    return dict(values[node.args[1]]) if isinstance(values, list) and node.args[1] < len(values) else {}


# ---------------------------------------------------------------- reductions and spatial ops
@register_rule("mean", "sum", "amax", "amin", "var", "std", "norm", "logsumexp", "max", "min", "argmax", "any", "all")
def _reduce(walk: Walk, node: fx.Node) -> Value:
    """Reducing over a channel dim keeps shapes consistent (like LayerNorm statistics); others shift."""
    a, b = walk.shape(node.args[0]), walk.shape(node)
    if b is None:
        return {}
    value = walk.value(node.args[0])
    dims = walk.arg(node, 1, "dim", None)
    dims = set(range(len(a))) if dims is None else {d % len(a) for d in ([dims] if isinstance(dims, int) else dims)}
    keep = len(a) == len(b)
    return {d if keep else d - sum(r < d for r in dims): s for d, s in value.items() if d not in dims}


@register_rule("max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
               "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "upsample_nearest2d",
               "upsample_bilinear2d", "_adaptive_avg_pool2d", "max_pool2d_with_indices")
def _spatial(walk: Walk, node: fx.Node) -> Value:
    """Pooling and resizing: batch and channel dims pass, spatial dims change size."""
    value = walk.value(node.args[0])
    for d, segs in value.items():
        if d > 1:
            walk.block(segs, f"{walk.label(node)} resizes that dim")
    return {d: s for d, s in value.items() if d <= 1}


@register_rule("pad", "constant_pad_nd", "reflection_pad2d", "replication_pad2d")
def _pad(walk: Walk, node: fx.Node) -> Value:
    a, b = walk.shape(node.args[0]), walk.shape(node)
    value = dict(walk.value(node.args[0]))
    for d in [d for d in value if a[d] != b[d]]:
        walk.block(value.pop(d), f"{walk.label(node)} pads that dim")
    return value
