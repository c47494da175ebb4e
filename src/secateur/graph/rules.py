"""Coupling rules: how each op moves channel spaces from its inputs to its output.

A rule gets the walk (see ``capture.Walk``) and the FX node, and returns the output's *value*: a dict
from dimension to the segments tracked on it. Anything a rule cannot carry forward it must block.
Register rules for your own modules with :func:`register_module_rule`.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import fx, nn

from .spaces import Member, Segment

if TYPE_CHECKING:
    from .capture import Value, Walk

ModuleRule = Callable[["Walk", fx.Node, nn.Module], "Value"]
FunctionRule = Callable[["Walk", fx.Node], "Value"]
MODULE_RULES: dict[type, ModuleRule] = {}
FUNCTION_RULES: dict[object, FunctionRule] = {}


def register_module_rule(*types: type) -> Callable[[ModuleRule], ModuleRule]:
    """Decorator: use ``fn(walk, node, module) -> value`` for modules of these types (and subclasses).

    >>> @register_module_rule(nn.Identity)
    ... def identity(walk, node, module):
    ...     return walk.value(node.args[0])
    """

    def deco(fn: ModuleRule) -> ModuleRule:
        for t in types:
            MODULE_RULES[t] = fn
        return fn

    return deco


def register_function_rule(*targets: object) -> Callable[[FunctionRule], FunctionRule]:
    """Decorator: use ``fn(walk, node) -> value`` for these functions or method names (strings)."""

    def deco(fn: FunctionRule) -> FunctionRule:
        for t in targets:
            FUNCTION_RULES[t] = fn
        return fn

    return deco


def module_rule(module: nn.Module) -> ModuleRule | None:
    """The rule registered for ``module``'s type or its nearest base class."""
    return next((MODULE_RULES[t] for t in type(module).__mro__ if t in MODULE_RULES), None)


# ---------------------------------------------------------------- pass-through and layout ops
_UNARY_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU,
                  nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Softplus, nn.Dropout, nn.Dropout1d,
                  nn.Dropout2d, nn.Identity)
_UNARY_FUNCTIONS = (F.relu, F.relu6, F.gelu, F.silu, F.leaky_relu, F.elu, F.hardswish, F.dropout,
                    torch.relu, torch.sigmoid, torch.tanh, torch.exp, torch.abs, operator.neg,
                    "relu", "sigmoid", "tanh", "contiguous", "clone", "float", "abs")


@register_module_rule(*_UNARY_MODULES)
def _unary_module(walk: Walk, node: fx.Node, module: nn.Module) -> Value:
    return dict(walk.value(node.args[0]))


@register_function_rule(*_UNARY_FUNCTIONS)
def _unary(walk: Walk, node: fx.Node) -> Value:
    return dict(walk.value(node.args[0]))


def _keep_channel_dims(walk: Walk, node: fx.Node) -> Value:
    """Pooling and resizing: dims 0 and 1 pass through, spatial dims change size."""
    value = walk.value(node.args[0])
    out = {d: s for d, s in value.items() if d <= 1}
    walk.block_segments([s for d, s in value.items() if d > 1], f"{walk.label(node)} resizes that dim")
    return out


for _cls in (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
             nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample):
    MODULE_RULES[_cls] = lambda walk, node, module: _keep_channel_dims(walk, node)
for _fn in (F.max_pool1d, F.max_pool2d, F.avg_pool1d, F.avg_pool2d, F.adaptive_avg_pool1d,
            F.adaptive_avg_pool2d, F.interpolate):
    FUNCTION_RULES[_fn] = _keep_channel_dims


def flatten_value(walk: Walk, node: fx.Node, start: int, end: int) -> Value:
    """Merge dims ``start..end``; a tracked channel dim must be the outermost non-unit one."""
    src = node.args[0]
    shape = walk.shape(src)
    out = {}
    for d, segs in walk.value(src).items():
        if d < start:
            out[d] = segs
        elif d > end:
            out[d - (end - start)] = segs
        elif any(shape[k] != 1 for k in range(start, d)):
            walk.block_segments([segs], f"{walk.label(node)} interleaves that dim with another")
        else:
            inner = math.prod(shape[d + 1 : end + 1])
            out[start] = tuple(Segment(s.space, s.factor * inner) for s in segs)
    return out


@register_module_rule(nn.Flatten)
def _flatten_module(walk: Walk, node: fx.Node, module: nn.Flatten) -> Value:
    rank = len(walk.shape(node.args[0]))
    return flatten_value(walk, node, module.start_dim % rank, module.end_dim % rank)


@register_function_rule(torch.flatten, "flatten")
def _flatten(walk: Walk, node: fx.Node) -> Value:
    rank = len(walk.shape(node.args[0]))
    start = walk.arg(node, 1, "start_dim", 0)
    end = walk.arg(node, 2, "end_dim", -1)
    return flatten_value(walk, node, start % rank, end % rank)


@register_function_rule("view", "reshape", torch.reshape)
def _reshape(walk: Walk, node: fx.Node) -> Value:
    src = node.args[0]
    in_shape, out_shape = walk.shape(src), walk.shape(node)
    sizes = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], list | tuple) else node.args[1:]
    if tuple(in_shape) == tuple(out_shape):
        return dict(walk.value(src))
    k = len(out_shape) - 1
    if in_shape[:k] == out_shape[:k] and math.prod(in_shape[k:]) == out_shape[k]:
        if len(sizes) == len(out_shape) and isinstance(sizes[k], int) and sizes[k] != -1:
            walk.block_segments(
                [s for d, s in walk.value(src).items() if d >= k],
                f"{walk.label(node)} hard-codes the flattened size {sizes[k]}; use -1 or flatten()",
            )
            return {d: s for d, s in walk.value(src).items() if d < k}
        return flatten_value(walk, node, k, len(in_shape) - 1)
    return walk.unknown(node, "reshape that is not a flatten")


@register_function_rule("mean", "sum", "amax", torch.mean, torch.sum, torch.amax)
def _reduce(walk: Walk, node: fx.Node) -> Value:
    src = node.args[0]
    rank = len(walk.shape(src))
    dims = walk.arg(node, 1, "dim", None)
    if dims is None:
        return walk.unknown(node, "reduction over every dim")
    dims = {d % rank for d in ([dims] if isinstance(dims, int) else dims)}
    keep = walk.arg(node, 2, "keepdim", False)
    out = {}
    for d, segs in walk.value(src).items():
        if d in dims:
            walk.block_segments([segs], f"{walk.label(node)} reduces over that dim")
        else:
            out[d if keep else d - sum(1 for r in dims if r < d)] = segs
    return out


@register_function_rule(operator.add, operator.sub, operator.mul, operator.truediv, torch.add, torch.sub,
                        torch.mul, torch.div, "add", "sub", "mul", "div", "add_", "mul_")
def _elementwise(walk: Walk, node: fx.Node) -> Value:
    return walk.merge_broadcast(node, [a for a in node.args[:2] if isinstance(a, fx.Node)])


@register_function_rule(torch.cat, torch.concat)
def _cat(walk: Walk, node: fx.Node) -> Value:
    tensors = list(node.args[0])
    rank = len(walk.shape(node))
    dim = walk.arg(node, 1, "dim", 0) % rank
    parts = []
    for t in tensors:
        segs = walk.value(t).get(dim)
        if segs is None:
            space = walk.spaces.new(walk.shape(t)[dim])
            walk.spaces.block(space, f"{walk.label(node)} concatenates an untracked input")
            segs = (Segment(space),)
        parts.extend(segs)
    rest = walk.merge_broadcast(node, tensors, skip_dim=dim)
    rest[dim] = tuple(parts)
    return rest


# ---------------------------------------------------------------- layers with weights
def _consume(walk: Walk, segs: tuple[Segment, ...] | None, tensor: str, dim: int) -> None:
    """The layer reads ``segs`` along ``dim`` of ``tensor`` (its input dimension)."""
    offset = 0
    for seg in segs or ():
        walk.spaces.add_member(seg.space, Member(tensor, dim, offset, seg.factor, "in"))
        offset += walk.spaces.size[seg.space] * seg.factor


def _norm_members(walk: Walk, segs: tuple[Segment, ...] | None, name: str, module: nn.Module) -> None:
    tensors = [n for n in ("weight", "bias", "running_mean", "running_var") if getattr(module, n, None) is not None]
    offset = 0
    for seg in segs or ():
        for t in tensors:
            walk.spaces.add_member(seg.space, Member(f"{name}.{t}", 0, offset, seg.factor, "norm"))
        offset += walk.spaces.size[seg.space] * seg.factor


def _produce(walk: Walk, name: str, module: nn.Module, size: int, weight_dim: int) -> Segment:
    members = [Member(f"{name}.weight", weight_dim)]
    if getattr(module, "bias", None) is not None:
        members.append(Member(f"{name}.bias", 0))
    return Segment(walk.produce(name, size, members))


@register_module_rule(nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d)
def _conv(walk: Walk, node: fx.Node, module: nn.modules.conv._ConvNd) -> Value:
    name = walk.name(node)
    value = walk.value(node.args[0])
    walk.block_segments([s for d, s in value.items() if d != 1], f"{name} mixes that dim")
    segs = value.get(1)
    if module.groups == 1:
        _consume(walk, segs, f"{name}.weight", 0 if module.transposed else 1)
        return {1: (_produce(walk, name, module, module.out_channels, 1 if module.transposed else 0),)}
    depthwise = module.groups == module.in_channels == module.out_channels and not module.transposed
    if depthwise and segs is not None:
        _norm_members(walk, segs, name, module)  # weight dim 0 and bias follow the input channels
        return {1: segs}
    reason = f"{name} is a grouped conv (groups={module.groups})"
    walk.block_segments([segs] if segs else [], reason)
    if depthwise:
        return {}
    out = _produce(walk, name, module, module.out_channels, 0)
    walk.spaces.block(out.space, reason)
    return {1: (out,)}


@register_module_rule(nn.Linear)
def _linear(walk: Walk, node: fx.Node, module: nn.Linear) -> Value:
    name = walk.name(node)
    value = walk.value(node.args[0])
    last = len(walk.shape(node.args[0])) - 1
    _consume(walk, value.get(last), f"{name}.weight", 1)
    out = {d: s for d, s in value.items() if d != last}
    out[last] = (_produce(walk, name, module, module.out_features, 0),)
    return out


@register_module_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _batchnorm(walk: Walk, node: fx.Node, module: nn.Module) -> Value:
    value = walk.value(node.args[0])
    _norm_members(walk, value.get(1), walk.name(node), module)
    return dict(value)


@register_module_rule(nn.LayerNorm)
def _layernorm(walk: Walk, node: fx.Node, module: nn.LayerNorm) -> Value:
    value = walk.value(node.args[0])
    last = len(walk.shape(node.args[0])) - 1
    if len(module.normalized_shape) != 1:
        return walk.unknown(node, "LayerNorm over several dims")
    _norm_members(walk, value.get(last), walk.name(node), module)
    return dict(value)
