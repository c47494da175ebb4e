"""``Spaces.tie`` at the common refinement of two segment layouts: channel ``j`` of every group, two group
layouts on one dimension, coarsening, and layouts that cannot be tied."""

from __future__ import annotations

import math

import pytest

from secateur.graph.spaces import Member, Segment, Spaces


def _channels(size: int) -> tuple[Spaces, Segment]:
    """A space of ``size`` channels that lives in rows of tensor ``w``."""
    spaces = Spaces()
    seg = Segment(spaces.new(size))
    spaces.add_member(seg.space, Member("w", 0))
    return spaces, seg


def _inside(spaces: Spaces, seg: Segment, groups: int, size: int) -> bool:
    """Tie ``seg`` to ``groups`` repeats of one space: channel ``j`` of every group is one unit."""
    unit = Segment(spaces.new(size // groups))
    return spaces.tie((seg,), (unit,) * groups)


def _units(spaces: Spaces) -> list[list[int]]:
    """The rows of ``w`` each unit of the one group occupies."""
    (group,) = spaces.groups()
    return [sorted(i for m in group.members for i in m.indices([u])) for u in range(group.size)]


def test_channel_j_of_every_group_is_one_unit():
    spaces, seg = _channels(8)
    assert _inside(spaces, seg, 4, 8)
    assert _units(spaces) == [[0, 2, 4, 6], [1, 3, 5, 7]]


def test_two_group_layouts_meet_at_their_common_refinement():
    spaces, seg = _channels(64)  # a conv of 4 groups of 16, then GroupNorm(8, 64)
    assert _inside(spaces, seg, 4, 64) and _inside(spaces, seg, 8, 64)
    assert _units(spaces) == [[j + 8 * k for k in range(8)] for j in range(8)]


@pytest.mark.parametrize(("channels", "first", "second"), [(48, 3, 4), (48, 4, 3), (60, 6, 10), (64, 2, 32),
                                                            (36, 4, 6), (24, 24, 2)])
def test_any_two_group_counts_tie_channels_equal_modulo_the_gcd_of_their_group_sizes(channels, first, second):
    spaces, seg = _channels(channels)
    assert _inside(spaces, seg, first, channels) and _inside(spaces, seg, second, channels)
    step = math.gcd(channels // first, channels // second)
    expected = [list(range(j, channels, step)) for j in range(step)]
    if step == 1:
        assert spaces.groups()[0].size == 1 and not spaces.groups()[0].prunable
    else:
        assert _units(spaces) == expected


def test_a_finer_single_segment_is_coarsened_to_the_other_side():
    spaces, seg = _channels(16)
    coarse = Segment(spaces.new(4), 4)
    assert spaces.tie((seg,), (coarse,))
    assert _units(spaces) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]


def test_a_two_part_layout_splits_a_whole_space_at_its_boundary():
    spaces, seg = _channels(10)
    a, b = Segment(spaces.new(4)), Segment(spaces.new(6))
    spaces.add_member(a.space, Member("x", 0))
    spaces.add_member(b.space, Member("y", 0))
    assert spaces.tie((a, b), (seg,))
    sizes = sorted((g.size, sorted({m.tensor for m in g.members})) for g in spaces.groups())
    assert sizes == [(4, ["w", "x"]), (6, ["w", "y"])]


def test_layouts_that_cannot_line_up_are_refused():
    spaces, seg = _channels(16)
    four = Segment(spaces.new(4), 4)
    assert not spaces.tie((four,), (Segment(spaces.new(6)), Segment(spaces.new(10))))  # 6 is inside a unit
    assert not spaces.tie((seg,), (Segment(spaces.new(8)),))  # 16 channels against 8
    assert not spaces.tie((Segment(spaces.new(2), 3),), (Segment(spaces.new(3), 2),))  # factors 3 and 2


def test_whole_groups_against_channel_j_of_every_group_leave_one_unit_never_a_wrong_tie():
    spaces, seg = _channels(64)
    assert _inside(spaces, seg, 4, 64)
    assert spaces.tie((seg,), (Segment(spaces.new(4), 16),))
    assert [g.size for g in spaces.groups()] == [1]
