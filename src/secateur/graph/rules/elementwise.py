"""Element-wise ops: unary ops pass a value through; ops on several tensors tie the channels meeting on a dim."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

from ..table import RuleTable
from .common import broadcast

if TYPE_CHECKING:
    from ..walk import Value, Walk

_UNARY = ("relu", "relu_", "gelu", "gelu_", "silu", "silu_", "sigmoid", "tanh", "hardtanh", "hardtanh_",
          "hardswish", "hardswish_", "hardsigmoid", "leaky_relu", "elu", "softplus", "mish", "neg", "exp", "log",
          "abs", "sqrt", "rsqrt", "reciprocal", "square", "erf", "sin", "cos", "clamp", "clamp_min", "clamp_max",
          "dropout", "alias", "clone", "contiguous", "detach", "to", "_to_copy", "lift_fresh_copy", "softmax",
          "_softmax", "log_softmax", "cumsum", "type_as", "sign", "round", "floor", "logical_not", "bitwise_not")
_BROADCAST = ("add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "maximum", "minimum", "pow",
           "where", "masked_fill", "masked_fill_", "eq", "ne", "lt", "gt", "le", "ge", "logical_and", "logical_or",
           "__and__", "__or__", "bitwise_and", "bitwise_or", "fmod", "remainder", "copy_")


def _unary(walk: Walk, node: fx.Node) -> Value:
    """Same shape out as in: the value (and a parameter's identity) passes through."""
    ref = walk.param(node.args[0])
    if ref is not None:
        walk.params[node] = ref
    return dict(walk.value(node.args[0]))


_LIKE = ("zeros_like", "ones_like", "empty_like", "full_like", "rand_like", "randn_like")
_NEW = ("new_zeros", "new_ones", "new_empty", "new_full")


def _like(walk: Walk, node: fx.Node) -> Value:
    """``zeros_like(x)``: a new tensor whose sizes follow ``x``'s, so it has ``x``'s channels (not its weights)."""
    return dict(walk.value(node.args[0]))


def _new(walk: Walk, node: fx.Node) -> Value:
    """``x.new_zeros(sizes)``: the sizes are written out and only ``x``'s dtype is read: nothing to track."""
    return {}


ELEMENTWISE = RuleTable([(_UNARY, _unary), (_BROADCAST, broadcast), (_LIKE, _like), (_NEW, _new)])
