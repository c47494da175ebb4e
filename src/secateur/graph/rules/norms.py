"""Per-channel layers: batch, instance, layer, RMS and group norms, PReLU. Their parameters and buffers
follow the channels of the normalized dim."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

from ..spaces import Segment
from ..table import RuleTable
from .common import param_member, tie_inside, uneven, whole_groups

if TYPE_CHECKING:
    from ..walk import Value, Walk


def _norm(walk: Walk, node: fx.Node, dim: int, tensors: list[object]) -> Value:
    """A per-channel layer: its parameters and buffers follow the channels of ``dim``."""
    value = walk.value(node.args[0])
    if value.get(dim):
        for t in tensors:
            if t is not None:
                param_member(walk, node, t, value[dim], "norm")
    return dict(value)


def _batch_norm(walk: Walk, node: fx.Node) -> Value | list[Value]:
    out = _norm(walk, node, 1, list(node.args[1:5]))
    name = node.target.overloadpacket.__name__
    return out if name in ("batch_norm", "instance_norm") else [out, {}, {}]


def _layer_norm(walk: Walk, node: fx.Node) -> Value | list[Value]:
    rank = len(walk.shape(node.args[0]))
    if len(node.args[1]) != 1:
        return walk.unknown(node, "a norm over several dims")
    out = _norm(walk, node, rank - 1, list(node.args[2:4]) if "rms" not in str(node.target) else [node.args[2]])
    return out if node.target.overloadpacket.__name__ != "native_layer_norm" else [out, {}, {}]


def _group_norm(walk: Walk, node: fx.Node) -> Value:
    """Channel ``j`` of every group is one unit, or whole groups are (``whole_groups``); with one channel per
    group, channels are (whole groups only when ``walk.grouping`` asks for groups)."""
    x, groups = node.args[0], node.args[1]
    value, per_group = walk.value(x).get(1), walk.shape(x)[1] // groups
    if value is not None and per_group > 1 and not whole_groups(walk, groups, per_group):
        tie_inside(walk, node, value, groups, per_group)
    elif value is not None and (per_group > 1 or walk.grouping == "groups"):
        space = walk.spaces.new(groups, "groups")
        if not walk.spaces.tie(value, (Segment(space, per_group),)):
            walk.block(value, uneven(walk, node, groups))
    return _norm(walk, node, 1, list(node.args[2:4]))


def _prelu(walk: Walk, node: fx.Node) -> Value:
    if walk.shape(node.args[1]) == (1,):
        return dict(walk.value(node.args[0]))
    return _norm(walk, node, 1, [node.args[1]])


NORMS = RuleTable([
    (("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm", "instance_norm"), _batch_norm),
    (("layer_norm", "native_layer_norm", "rms_norm"), _layer_norm),
    ("group_norm", _group_norm),
    ("prelu", _prelu),
])
