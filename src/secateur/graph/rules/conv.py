"""Convolutions: the output channels are a new space; a grouped conv refines both sides into groups."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

from ..spaces import Segment
from ..table import RuleTable
from .common import param_member

if TYPE_CHECKING:
    from ..walk import Value, Walk

_NAMES = ("conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
          "_convolution")


def _grouped(walk: Walk, node: fx.Node, groups: int, seg: Segment) -> None:
    """Input channels ``in_ch / groups`` and output channels ``out_ch / groups`` per group: tie both to one
    space of groups (a depthwise conv ties input and output channels)."""
    x, value = node.args[0], walk.value(node.args[0])
    group_space = walk.spaces.new(groups, "groups")
    in_ch, out_ch = walk.shape(x)[1], walk.shape(node.args[1])[0]
    if not (walk.spaces.tie(value[1], (Segment(group_space, in_ch // groups),))
            and walk.spaces.tie((seg,), (Segment(group_space, out_ch // groups),))):
        walk.block(value[1], f"{walk.label(node)} groups channels unevenly")
        walk.block((seg,), f"{walk.label(node)} groups channels unevenly")


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
    if groups != 1 and (transposed or value.get(1) is None):
        walk.block(value.get(1), f"{walk.label(node)} is a grouped conv")
        return {}
    in_dim, out_dim = (0, 1) if transposed else (1, 0)
    if groups == 1:
        walk.member(value.get(1), ref.name, ref.dims[in_dim], "in")
    seg = walk.produce(ref, out_dim, walk.shape(weight)[out_dim])
    param_member(walk, node, bias, (seg,))
    if groups != 1:
        _grouped(walk, node, groups, seg)
    return {1: (seg,)}


CONV = RuleTable([(_NAMES, _conv)])
