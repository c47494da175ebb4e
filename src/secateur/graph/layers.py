"""Coupling rules for ATen ops with weights: linear / matmul, convolutions, norms, embeddings,
scaled-dot-product attention (heads and GQA groups) and recurrent layers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

from .rules import register_rule
from .spaces import Member, Segment

if TYPE_CHECKING:
    from .capture import Value, Walk


def _tie_or_block(walk: Walk, node: fx.Node, a, b):
    """Tie two layouts that must match; if only one is tracked, it cannot be pruned."""
    if a is None or b is None:
        walk.block(a or b, f"{walk.label(node)} pairs it with an untracked dim")
        return None
    return walk.tie(a, b, node)


def _bias(walk: Walk, node: fx.Node, arg: object, segs, role: str = "out") -> None:
    ref = walk.param(arg)
    if ref is not None:
        walk.member(segs, ref.name, ref.dims[0], role)
    elif isinstance(arg, fx.Node):
        walk.block(segs, f"{walk.label(node)} has a computed bias")


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
        _bias(walk, node, bias, (seg,))
    out[len(walk.shape(node)) - 1] = (seg,)
    return out


@register_rule("linear")
def _linear(walk: Walk, node: fx.Node) -> Value:
    return _weight_matmul(walk, node, node.args[0], node.args[1], 1, 0, walk.arg(node, 2, "bias"))


@register_rule("addmm")
def _addmm(walk: Walk, node: fx.Node) -> Value:
    return _weight_matmul(walk, node, node.args[1], node.args[2], 0, 1, node.args[0])


@register_rule("matmul", "mm", "bmm")
def _matmul(walk: Walk, node: fx.Node) -> Value:
    a, b = node.args[0], node.args[1]
    if walk.param(b) is not None and len(walk.shape(b)) == 2:
        return _weight_matmul(walk, node, a, b, 0, 1)
    sa, sb, so = walk.shape(a), walk.shape(b), walk.shape(node)
    if len(sa) < 2 or len(sb) < 2 or walk.param(a) is not None:
        return walk.unknown(node, "a matmul of this form")
    va, vb = walk.value(a), walk.value(b)
    _tie_or_block(walk, node, va.get(len(sa) - 1), vb.get(len(sb) - 2))
    out: Value = {}
    for od in range(len(so) - 2):
        da, db = od - (len(so) - len(sa)), od - (len(so) - len(sb))
        segs = [v.get(d) if d >= 0 and s[d] > 1 else None for v, d, s in ((va, da, sa), (vb, db, sb))]
        sizes = [s[d] if d >= 0 else 1 for d, s in ((da, sa), (db, sb))]
        if min(sizes) > 1:
            tied = _tie_or_block(walk, node, *segs)
            if tied is not None:
                out[od] = tied
        elif segs[0] or segs[1]:
            out[od] = segs[0] or segs[1]
    if len(sa) - 2 in va:
        out[len(so) - 2] = va[len(sa) - 2]
    if len(sb) - 1 in vb:
        out[len(so) - 1] = vb[len(sb) - 1]
    return out


@register_rule("conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d",
               "conv_transpose3d", "_convolution")
def _conv(walk: Walk, node: fx.Node) -> Value:
    name = node.target.overloadpacket.__name__
    x, weight, bias = node.args[0], node.args[1], walk.arg(node, 2, "bias")
    general = name in ("convolution", "_convolution")
    transposed = name.startswith("conv_transpose") or (general and node.args[6])
    groups = walk.arg(node, 8 if general else 6, "groups", 1)
    ref, value = walk.param(weight), walk.value(x)
    for d, segs in value.items():
        if d != 1:
            walk.block(segs, f"{walk.label(node)} mixes that dim")
    if ref is None:
        walk.block(value.get(1), f"{walk.label(node)} uses a computed weight")
        return {}
    wshape = walk.shape(weight)
    in_dim, out_dim = (0, 1) if transposed else (1, 0)
    if groups == 1:
        walk.member(value.get(1), ref.name, ref.dims[in_dim], "in")
        seg = walk.produce(ref, out_dim, wshape[out_dim])
        _bias(walk, node, bias, (seg,))
        return {1: (seg,)}
    if transposed or value.get(1) is None:
        walk.block(value.get(1), f"{walk.label(node)} is a grouped conv")
        return {}
    out_ch = wshape[0]
    seg = walk.produce(ref, 0, out_ch)
    _bias(walk, node, bias, (seg,))
    group_space = walk.spaces.new(groups, "groups")
    in_ch = walk.shape(x)[1]
    if not (walk.spaces.tie(value[1], (Segment(group_space, in_ch // groups),))
            and walk.spaces.tie((seg,), (Segment(group_space, out_ch // groups),))):
        walk.block(value[1], f"{walk.label(node)} groups channels unevenly")
        walk.block((seg,), f"{walk.label(node)} groups channels unevenly")
    return {1: (seg,)}


def _norm(walk: Walk, node: fx.Node, dim: int, tensors: list[object]) -> Value:
    """A per-channel layer: its parameters and buffers follow the channels of ``dim``."""
    value = walk.value(node.args[0])
    if value.get(dim):
        for t in tensors:
            if t is not None:
                _bias(walk, node, t, value[dim], "norm")
    return dict(value)


@register_rule("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm", "instance_norm")
def _batch_norm(walk: Walk, node: fx.Node) -> Value | list[Value]:
    out = _norm(walk, node, 1, list(node.args[1:5]))
    name = node.target.overloadpacket.__name__
    return out if name in ("batch_norm", "instance_norm") else [out, {}, {}]


@register_rule("layer_norm", "native_layer_norm", "rms_norm")
def _layer_norm(walk: Walk, node: fx.Node) -> Value | list[Value]:
    rank = len(walk.shape(node.args[0]))
    if len(node.args[1]) != 1:
        return walk.unknown(node, "a norm over several dims")
    out = _norm(walk, node, rank - 1, list(node.args[2:4]) if "rms" not in str(node.target) else [node.args[2]])
    return out if node.target.overloadpacket.__name__ != "native_layer_norm" else [out, {}, {}]


@register_rule("group_norm")
def _group_norm(walk: Walk, node: fx.Node) -> Value:
    x, groups = node.args[0], node.args[1]
    value = walk.value(x)
    if value.get(1) is not None:
        space = walk.spaces.new(groups, "groups")
        if not walk.spaces.tie(value[1], (Segment(space, walk.shape(x)[1] // groups),)):
            walk.block(value[1], f"{walk.label(node)} groups channels unevenly")
    return _norm(walk, node, 1, list(node.args[2:4]))


@register_rule("prelu")
def _prelu(walk: Walk, node: fx.Node) -> Value:
    if walk.shape(node.args[1]) == (1,):
        return dict(walk.value(node.args[0]))
    return _norm(walk, node, 1, [node.args[1]])


@register_rule("embedding")
def _embedding(walk: Walk, node: fx.Node) -> Value:
    weight, ids = node.args[0], node.args[1]
    ref = walk.param(weight)
    out = dict(walk.value(ids))
    if ref is None:
        return walk.unknown(node, "an embedding with a computed table")
    out[len(walk.shape(node)) - 1] = (walk.produce(ref, 1, walk.shape(weight)[1], kind="hidden"),)
    return out


@register_rule("scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu")
def _sdpa(walk: Walk, node: fx.Node) -> Value:
    """q, k, v are ``(..., heads, seq, dim)``; with fewer k/v heads each serves ``Hq / Hk`` query heads."""
    q, k, v = node.args[:3]
    vq, vk, vv = walk.value(q), walk.value(k), walk.value(v)
    rank, hq, hk = len(walk.shape(q)), walk.shape(q)[-3], walk.shape(k)[-3]
    _tie_or_block(walk, node, vk.get(rank - 3), vv.get(rank - 3))
    k_heads = vk.get(rank - 3)
    if k_heads is not None and hq != hk:
        k_heads = tuple(Segment(s.space, s.factor * (hq // hk)) for s in walk.spaces.resolve(k_heads))
    heads = _tie_or_block(walk, node, vq.get(rank - 3), k_heads)
    _tie_or_block(walk, node, vq.get(rank - 1), vk.get(rank - 1))
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


def _recurrent(walk: Walk, node: fx.Node, gates: int) -> list[Value]:
    """aten.lstm / aten.gru: ``(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, ...)``."""
    x, hx, params, has_biases, num_layers, bidirectional = (node.args[0], node.args[1], node.args[2],
                                                              node.args[3], node.args[4], node.args[7])
    hx = hx if isinstance(hx, list | tuple) else [hx]  # gru takes one state tensor, lstm a list
    refs = [walk.param(p) for p in params]
    value = walk.value(x)
    rank = len(walk.shape(x))
    per_layer = 4 if has_biases else 2
    user_state = any(isinstance(h, fx.Node) and h.op == "placeholder" for h in hx)
    if bidirectional or None in refs or user_state:
        return [walk.unknown(node, "a bidirectional RNN or given state"), {}, {}][: len(node.meta["val"])]
    prev, first = value.get(rank - 1), None
    for layer in range(num_layers):
        w_ih, w_hh, *biases = refs[layer * per_layer : (layer + 1) * per_layer]
        hidden = walk.shape(params[layer * per_layer + 1])[1]
        walk.member(prev, w_ih.name, 1, "in")
        gate_rows = {"repeat": gates, "stride": hidden}
        extra = [Member(w_ih.name, 0, **gate_rows), Member(w_hh.name, 0, **gate_rows)]
        extra += [Member(b.name, 0, **gate_rows) for b in biases]
        seg = walk.produce(w_hh, 1, hidden, extra)
        first = first or seg
        walk.tie((first,), (seg,), node)  # nn.LSTM has one hidden_size for every layer
        prev = (seg,)
    for user in node.users:
        if user.args[1] != 0 and user.users:
            walk.block(prev, f"{walk.label(node)} returns its final state")
    out = {d: s for d, s in value.items() if d != rank - 1}
    out[rank - 1] = prev
    return [out, {}, {}][: len(node.meta["val"])]


@register_rule("lstm")
def _lstm(walk: Walk, node: fx.Node) -> list[Value]:
    return _recurrent(walk, node, 4)


@register_rule("gru")
def _gru(walk: Walk, node: fx.Node) -> list[Value]:
    return _recurrent(walk, node, 3)

