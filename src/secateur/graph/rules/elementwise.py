"""Element-wise ops: unary ops pass a value through; ops on several tensors tie the channels meeting on a dim."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

from ..table import RuleTable

if TYPE_CHECKING:
    from ..walk import ParamRef, Value, Walk

_UNARY = ("relu", "relu_", "gelu", "gelu_", "silu", "silu_", "sigmoid", "tanh", "hardtanh", "hardtanh_",
          "hardswish", "hardswish_", "hardsigmoid", "leaky_relu", "elu", "softplus", "mish", "neg", "exp", "log",
          "abs", "sqrt", "rsqrt", "reciprocal", "square", "erf", "sin", "cos", "clamp", "clamp_min", "clamp_max",
          "dropout", "alias", "clone", "contiguous", "detach", "to", "_to_copy", "lift_fresh_copy", "softmax",
          "_softmax", "log_softmax", "cumsum", "type_as", "sign", "round", "floor", "logical_not", "bitwise_not")
_BROADCAST = ("add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "maximum", "minimum", "pow",
           "where", "masked_fill", "eq", "ne", "lt", "gt", "le", "ge", "logical_and", "logical_or",
           "__and__", "__or__", "bitwise_and", "bitwise_or", "fmod", "remainder", "copy_")


def _unary(walk: Walk, node: fx.Node) -> Value:
    """Same shape out as in: the value (and a parameter's identity) passes through."""
    ref = walk.param(node.args[0])
    if ref is not None:
        walk.params[node] = ref
    return dict(walk.value(node.args[0]))


def _broadcast(walk: Walk, node: fx.Node) -> Value:
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


ELEMENTWISE = RuleTable([(_UNARY, _unary), (_BROADCAST, _broadcast)])
