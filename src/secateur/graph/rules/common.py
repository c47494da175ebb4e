"""Helpers that several rule families share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import fx

from ..spaces import Segment

if TYPE_CHECKING:
    from ..walk import Walk


def scale(segs: tuple[Segment, ...], by: int) -> tuple[Segment, ...]:
    """``segs`` with every channel spanning ``by`` times as many positions."""
    return tuple(Segment(s.space, s.factor * by) for s in segs)


def tie_or_block(walk: Walk, node: fx.Node, a, b):
    """Tie two layouts that must match; if only one is tracked, it cannot be pruned."""
    if a is None or b is None:
        walk.block(a or b, f"{walk.label(node)} pairs it with an untracked dim")
        return None
    return walk.tie(a, b, node)


def param_member(walk: Walk, node: fx.Node, arg: object, segs, role: str = "out") -> None:
    """Parameter ``arg`` (a bias, a norm's scale) follows ``segs`` along its first dim; a computed
    tensor there blocks them."""
    ref = walk.param(arg)
    if ref is not None:
        walk.member(segs, ref.name, ref.dims[0], role)
    elif isinstance(arg, fx.Node):
        walk.block(segs, f"{walk.label(node)} has a computed bias")
