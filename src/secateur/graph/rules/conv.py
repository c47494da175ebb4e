"""Convolutions: the output channels are a new space; a grouped conv ties channel ``j`` of every group, or whole
groups."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

from ..spaces import Segment
from ..table import RuleTable
from .common import param_member, tie_inside, uneven, whole_groups

if TYPE_CHECKING:
    from ..walk import ParamRef, Value, Walk

_NAMES = ("conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
          "_convolution")


def _grouped(walk: Walk, node: fx.Node, ref: ParamRef, groups: int, seg: Segment) -> None:
    """``groups`` groups of ``c_in`` input and ``c_out`` output channels. Channel ``j`` of every group is one unit
    on each side (the weight's input dim holds the input units), or whole groups are units that tie both sides
    (``whole_groups``); a depthwise conv (``c_in == 1``) ties each input channel to its outputs."""
    x, value = node.args[0], walk.value(node.args[0]).get(1)
    c_in, c_out = walk.shape(x)[1] // groups, walk.shape(node.args[1])[0] // groups
    if c_in > 1 and not whole_groups(walk, groups, min(c_in, c_out)):
        unit = tie_inside(walk, node, value, groups, c_in)
        if unit is not None:
            walk.member((unit,), ref.name, ref.dims[1], "in")
        tie_inside(walk, node, (seg,), groups, c_out)
        return
    if value is None:
        walk.block((seg,), f"{walk.label(node)} ties its output channels to input channels that are not tracked")
        return
    group_space = walk.spaces.new(groups, "channels" if c_in == 1 and walk.grouping != "groups" else "groups")
    if not (walk.spaces.tie(value, (Segment(group_space, c_in),))
            and walk.spaces.tie((seg,), (Segment(group_space, c_out),))):
        walk.block(value, uneven(walk, node, groups))
        walk.block((seg,), uneven(walk, node, groups))


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
    if groups != 1 and transposed:
        walk.block(value.get(1), f"{walk.label(node)} is a grouped transposed conv, which secateur cannot slice yet")
        return {}
    in_dim, out_dim = (0, 1) if transposed else (1, 0)
    if groups == 1:
        walk.member(value.get(1), ref.name, ref.dims[in_dim], "in")
    seg = walk.produce(ref, out_dim, walk.shape(weight)[out_dim])
    param_member(walk, node, bias, (seg,))
    if groups != 1:
        _grouped(walk, node, ref, groups, seg)
    return {1: (seg,)}


CONV = RuleTable([(_NAMES, _conv)])
