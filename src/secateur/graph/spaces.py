"""Channel spaces: the units of coupling.

A *space* is a set of channels that exists once but shows up in many tensors: conv1's output
channels are rows of conv1.weight, entries of bn1.weight and columns of conv2.weight. Ops that tie
two spaces together (a residual add) merge them (union-find). A *group* is a merged class: removing
channel ``c`` of a group removes, in every member tensor, the positions that channel occupies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["out", "in", "norm"]


@dataclass(frozen=True)
class Segment:
    """A run of a value's dimension owned by one space; each channel spans ``factor`` positions."""

    space: int
    factor: int = 1


@dataclass(frozen=True)
class Member:
    """Channel ``c`` of the group occupies ``tensor[..., offset + c*factor : offset + (c+1)*factor, ...]``
    along ``dim``."""

    tensor: str
    dim: int
    offset: int = 0
    factor: int = 1
    role: Role = "out"

    def indices(self, channels: list[int]) -> list[int]:
        """Positions in ``tensor`` along ``dim`` taken by ``channels``."""
        base = self.offset
        return [base + c * self.factor + j for c in channels for j in range(self.factor)]


@dataclass
class Group:
    """Channels that must be removed together, with every tensor they appear in."""

    id: int
    size: int
    members: list[Member]
    blocked: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> bool:
        return not self.blocked and any(m.role == "out" for m in self.members)

    @property
    def modules(self) -> list[str]:
        """Qualified names of the modules that own this group's tensors, in first-seen order."""
        return list(dict.fromkeys(m.tensor.rpartition(".")[0] for m in self.members))

    def describe(self) -> str:
        """E.g. ``conv1.out => bn1 => conv2.in``."""
        parts = dict.fromkeys((m.tensor.rpartition(".")[0], m.role) for m in self.members)
        return " => ".join(f"{name}.{role}" if role != "norm" else name for name, role in parts)


class Spaces:
    """Union-find over channel spaces, with the tensors each one appears in."""

    def __init__(self) -> None:
        self._parent: list[int] = []
        self.size: list[int] = []
        self._members: dict[int, list[Member]] = {}
        self._blocked: dict[int, list[str]] = {}
        self._claims: dict[tuple[str, int, int], int] = {}

    def new(self, size: int) -> int:
        self._parent.append(len(self._parent))
        self.size.append(size)
        return len(self._parent) - 1

    def find(self, s: int) -> int:
        while self._parent[s] != s:
            self._parent[s] = self._parent[self._parent[s]]
            s = self._parent[s]
        return s

    def union(self, a: int, b: int) -> bool:
        """Merge two spaces; spaces of different sizes cannot be merged (returns False)."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        if self.size[ra] != self.size[rb]:
            return False
        self._parent[rb] = ra
        return True

    def add_member(self, space: int, member: Member) -> None:
        """Record that ``space`` lives in ``member``; a tensor range claimed twice merges the claimants."""
        key = (member.tensor, member.dim, member.offset)
        if key in self._claims:
            if not self.union(self._claims[key], space):
                self.block(space, f"{member.tensor} is reached with two different channel counts")
            return
        self._claims[key] = space
        self._members.setdefault(space, []).append(member)

    def block(self, space: int, reason: str) -> None:
        """Mark a space as not prunable, with the reason shown by ``analyze``."""
        self._blocked.setdefault(space, []).append(reason)

    def groups(self) -> list[Group]:
        """The merged classes, in order of their first space."""
        classes: dict[int, Group] = {}
        for s in range(len(self._parent)):
            root = self.find(s)
            group = classes.setdefault(root, Group(id=len(classes), size=self.size[root], members=[]))
            group.members.extend(self._members.get(s, []))
            group.blocked.extend(r for r in self._blocked.get(s, []) if r not in group.blocked)
        return [g for g in classes.values() if g.members]
