"""Channel spaces: the units of coupling.

A *space* is a set of channels that exists once but shows up in many tensors: conv1's output
channels are rows of conv1.weight, entries of bn1.weight and columns of conv2.weight. Ops that tie
two spaces together (a residual add) merge them (union-find). A space can also be *refined* into a
sequence of sub-spaces: splitting ``H*D`` features into ``(H, D)`` turns q_proj's output space into a
space of H heads, each spanning D rows; GQA refines query heads into key-value groups. A *group* is
a merged, unrefined class: removing its channel ``c`` removes, in every member tensor, the
positions that channel occupies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

Role = Literal["out", "in", "norm"]


@dataclass(frozen=True)
class Segment:
    """A run of a value's dimension owned by one space; each channel spans ``factor`` positions."""

    space: int
    factor: int = 1


@dataclass(frozen=True)
class Member:
    """Channel ``c`` occupies ``offset + r*stride + c*factor + j`` along ``dim`` of ``tensor``, for
    ``j < factor`` and ``r < repeat`` (``repeat`` > 1 for gate-stacked weights such as an LSTM's)."""

    tensor: str
    dim: int
    offset: int = 0
    factor: int = 1
    role: Role = "out"
    repeat: int = 1
    stride: int = 0

    def indices(self, channels: list[int]) -> list[int]:
        """Positions in ``tensor`` along ``dim`` taken by ``channels``."""
        return [self.offset + r * self.stride + c * self.factor + j
                for r in range(self.repeat) for c in channels for j in range(self.factor)]


@dataclass
class Group:
    """Channels that must be removed together, with every tensor they appear in."""

    id: int
    size: int
    members: list[Member]
    blocked: list[str] = field(default_factory=list)
    kind: str = "channels"

    @property
    def prunable(self) -> bool:
        return not self.blocked and any(m.role == "out" for m in self.members) and self.size > 1

    @property
    def modules(self) -> list[str]:
        """Qualified names of the modules that own this group's tensors, in first-seen order."""
        return list(dict.fromkeys(m.tensor.rpartition(".")[0] for m in self.members))

    def describe(self) -> str:
        """E.g. ``conv1.out => bn1 => conv2.in``."""
        parts = dict.fromkeys((m.tensor.rpartition(".")[0], m.role) for m in self.members)
        return " => ".join(f"{name}.{role}" if role != "norm" else name for name, role in parts)


class Spaces:
    """Union-find over channel spaces, with refinement and the tensors each space appears in."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self.size: list[int] = []
        self._members: dict[int, list[Member]] = {}
        self._blocked: dict[int, list[str]] = {}
        self._kind: dict[int, str] = {}
        self._refined: dict[int, tuple[Segment, ...]] = {}
        self._claims: dict[tuple[str, int, int, int], int] = {}  # a tensor range -> the space in it

    def new(self, size: int, kind: str = "channels") -> int:
        self._parent.append(len(self._parent))
        self.size.append(size)
        self._kind[len(self.size) - 1] = kind
        return len(self._parent) - 1

    def find(self, s: int) -> int:
        while self._parent[s] != s:
            self._parent[s] = self._parent[self._parent[s]]
            s = self._parent[s]
        return s

    # -- refinement
    def resolve(self, segs: tuple[Segment, ...]) -> tuple[Segment, ...]:
        """``segs`` with every refined space replaced by its parts (factors multiplied through)."""
        out: list[Segment] = []
        for seg in segs:
            root = self.find(seg.space)
            if root in self._refined:
                parts = tuple(Segment(p.space, p.factor * seg.factor) for p in self._refined[root])
                out.extend(self.resolve(parts))
            else:
                out.append(Segment(root, seg.factor))
        return tuple(out)

    def refine(self, space: int, parts: list[tuple[int, int]], kinds: list[str] | None = None) -> tuple[Segment, ...]:
        """Re-express ``space`` as consecutive parts ``(size, factor)``; members move to the parts."""
        root = self.find(space)
        assert root not in self._refined and sum(s * f for s, f in parts) == self.size[root]
        kinds = kinds or [self._kind[root]] * len(parts)
        segs = tuple(Segment(self.new(s, k), f) for (s, f), k in zip(parts, kinds, strict=True))
        self._refined[root] = segs
        for reason in self._blocked.pop(root, []):
            for seg in segs:
                self.block(seg.space, reason)
        members = self._members.pop(root, [])
        for m in members:
            self._claims.pop(self._key(m), None)
        for member in members:
            self._distribute(segs, member)
        return segs

    @staticmethod
    def _key(m: Member) -> tuple[str, int, int, int]:
        return m.tensor, m.dim, m.offset, m.factor

    def _distribute(self, segs: tuple[Segment, ...], member: Member) -> None:
        start = 0
        for seg in segs:
            part = replace(member, offset=member.offset + start * member.factor, factor=member.factor * seg.factor)
            self.add_member(seg.space, part)
            start += self.size[seg.space] * seg.factor

    # -- merging
    def tie(self, a: tuple[Segment, ...], b: tuple[Segment, ...]) -> bool:
        """Tie two layouts of one dimension channel for channel, at their common refinement.

        Where a segment of one side ends inside a segment of the other, that segment's space is split there;
        where two segments cover the same run with different factors, the finer one is coarsened. A space
        that appears several times (``(s,) * 4``: channel ``j`` of every group) is split everywhere at once,
        so this repeats until both sides line up, then ties them segment by segment.
        """
        aligned = None
        while aligned is None:
            a, b = self.resolve(a), self.resolve(b)
            if self._length(a) != self._length(b):
                return False
            aligned = self._align(a, b)
        return aligned and all(self._union(x.space, y.space) for x, y in zip(a, b, strict=True))

    def _align(self, a: tuple[Segment, ...], b: tuple[Segment, ...]) -> bool | None:
        """True when ``a`` and ``b`` (resolved, of one length) pair segment by segment; False when they
        cannot; None after refining one space towards their common refinement (resolve them again)."""
        for x, y in zip(a, b, strict=False):
            lx, ly = self.size[x.space] * x.factor, self.size[y.space] * y.factor
            if lx != ly:
                longer = x if lx > ly else y
                if min(lx, ly) % longer.factor:
                    return False  # the boundary falls inside one unit of the longer segment
                cut = min(lx, ly) // longer.factor
                self.refine(longer.space, [(cut, 1), (self.size[longer.space] - cut, 1)])
                return None
            if x.factor != y.factor:
                fine, coarse = (x, y) if x.factor < y.factor else (y, x)
                if coarse.factor % fine.factor:
                    return False
                ratio = coarse.factor // fine.factor
                self.refine(fine.space, [(self.size[fine.space] // ratio, ratio)])
                return None
        return True  # every pair has one length, so both sides have as many segments

    def _length(self, segs: tuple[Segment, ...]) -> int:
        return sum(self.size[s.space] * s.factor for s in segs)

    def _union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if self.size[ra] != self.size[rb]:
            return False
        if ra in self._refined or rb in self._refined:
            return self.tie((Segment(ra),), (Segment(rb),))
        self._parent[rb] = ra
        self._members.setdefault(ra, []).extend(self._members.pop(rb, []))
        for reason in self._blocked.pop(rb, []):
            self.block(ra, reason)
        if self._kind.get(rb) != "channels":
            self._kind[ra] = self._kind[rb]
        return True

    def add_member(self, space: int, member: Member) -> None:
        """Record that ``space`` lives in ``member``; a tensor range claimed twice ties the claimants."""
        root = self.find(space)
        if root in self._refined:
            self._distribute(self._refined[root], member)
            return
        key = self._key(member)
        if key in self._claims:
            if not self.tie((Segment(self._claims[key]),), (Segment(root),)):
                self.block(root, f"{member.tensor} is reached with two different channel layouts")
            return
        self._claims[key] = root
        self._members.setdefault(root, []).append(member)

    def block(self, space: int, reason: str) -> None:
        """Mark a space (and, if refined, all its parts) as not prunable, with the reason."""
        root = self.find(space)
        if root in self._refined:
            for seg in self._refined[root]:
                self.block(seg.space, reason)
            return
        reasons = self._blocked.setdefault(root, [])
        if reason not in reasons:
            reasons.append(reason)

    def groups(self) -> list[Group]:
        """The merged, unrefined classes that appear in at least one tensor."""
        roots = [s for s in range(len(self._parent)) if self.find(s) == s and s not in self._refined]
        groups = [Group(id=0, size=self.size[r], members=list(self._members.get(r, [])),
                        blocked=list(self._blocked.get(r, [])), kind=self._kind.get(r, "channels"))
                  for r in roots if self._members.get(r)]
        for i, g in enumerate(groups):
            g.id = i
        return groups
