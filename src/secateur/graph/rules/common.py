"""Helpers that several rule families share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

from ..spaces import Segment

if TYPE_CHECKING:
    from ..walk import ParamRef, Value, Walk


def scale(segs: tuple[Segment, ...], by: int) -> tuple[Segment, ...]:
    """``segs`` with every channel spanning ``by`` times as many positions."""
    return tuple(Segment(s.space, s.factor * by) for s in segs)


def tie_or_block(walk: Walk, node: fx.Node, a, b):
    """Tie two layouts that must match; if only one is tracked, it cannot be pruned."""
    if a is None or b is None:
        walk.block(a or b, f"{walk.label(node)} pairs it with an untracked dim")
        return None
    return walk.tie(a, b, node)


def whole_groups(walk: Walk, groups: int, per_group: int) -> bool:
    """Whether a layer of ``groups`` groups of ``per_group`` channels (the fewer, for a conv's two sides) loses
    whole groups: as ``walk.grouping`` says, or, under ``"finer"``, when that gives more units than taking
    channel ``j`` out of every group."""
    return walk.grouping == "groups" or (walk.grouping == "finer" and per_group < groups)


def tie_inside(walk: Walk, node: fx.Node, segs: tuple[Segment, ...] | None, groups: int, per_group: int
               ) -> Segment | None:
    """Tie ``segs`` (``groups`` equal groups of ``per_group`` channels) so that unit ``j`` is channel ``j`` of
    every group; the space of those units, or None (``segs`` untracked, or blocked: a layout that cannot)."""
    if segs is None:
        return None
    unit = Segment(walk.spaces.new(per_group))
    if walk.spaces.tie(segs, (unit,) * groups):
        return unit
    walk.block(segs, uneven(walk, node, groups))
    return None


def uneven(walk: Walk, node: fx.Node, groups: int) -> str:
    """Why channels split into ``groups`` groups by ``node`` cannot be pruned."""
    return f"{walk.label(node)} has {groups} groups that do not line up with those of the layers coupled to it"


def param_member(walk: Walk, node: fx.Node, arg: object, segs, role: str = "out") -> None:
    """Parameter ``arg`` (a bias, a norm's scale) follows ``segs`` along its first dim; a computed
    tensor there blocks them."""
    ref = walk.param(arg)
    if ref is not None:
        walk.member(segs, ref.name, ref.dims[0], role)
    elif isinstance(arg, fx.Node):
        walk.block(segs, f"{walk.label(node)} has a computed bias")


def broadcast(walk: Walk, node: fx.Node) -> Value:
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
