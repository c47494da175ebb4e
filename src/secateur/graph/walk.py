"""The walk over a captured ATen graph, and the types rules work with.

Every tensor gets a *value*: for each dimension, the channel segments tracked on it. Parameters are
tracked separately as :class:`ParamRef` so ops that meet a parameter (a linear's weight, an RMSNorm
scale) can make it a member of a space. :class:`Walk` visits the nodes in order and asks the rule for
each op (a :class:`~secateur.graph.table.RuleTable` entry) what its output's value is.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import fx

from .spaces import Member, Segment, Spaces

if TYPE_CHECKING:
    from .table import Rule

Value = dict[int, tuple[Segment, ...]]
Grouping = Literal["channels", "groups", "finer"]
"""How grouped convs and GroupNorm are pruned: channel ``j`` of every group, whole groups, or per layer
whichever gives more units (see ``rules/common.whole_groups``)."""


@dataclass(frozen=True)
class ParamRef:
    """A node that is (a view of) parameter or buffer ``name``; ``dims[i]`` is the parameter dim
    behind the node's dim ``i`` (None for a dim of size one added by a view)."""

    name: str
    dims: tuple[int | None, ...]


def op_name(target: object) -> str:
    """``aten.linear.default`` -> ``linear``; ``operator.getitem`` -> ``getitem``."""
    if target is operator.getitem:
        return "getitem"
    if isinstance(target, torch._ops.OpOverload):
        return target.overloadpacket.__name__
    return getattr(target, "__name__", str(target))


class Walk:
    """State of one pass over the graph; rules call its helpers."""

    def __init__(self, gm: fx.GraphModule, param_names: dict[str, str], rules: Mapping[str, Rule],
                 grouping: Grouping = "finer") -> None:
        self.gm = gm
        self.rules = rules
        self.grouping = grouping
        self.spaces = Spaces()
        self.values: dict[fx.Node, Value | list[Value]] = {}
        self.params: dict[fx.Node, ParamRef] = {}
        self.unknown_ops: list[str] = []
        self._param_names = param_names
        self._produced: dict[tuple[str, int], int] = {}

    # -- queries
    def value(self, arg: object) -> Value:
        v = self.values.get(arg, {}) if isinstance(arg, fx.Node) else {}
        return v if isinstance(v, dict) else {}

    def shape(self, arg: object) -> tuple[int, ...] | None:
        val = arg.meta.get("val") if isinstance(arg, fx.Node) else None
        return tuple(int(s) for s in val.shape) if isinstance(val, torch.Tensor) else None

    def param(self, arg: object) -> ParamRef | None:
        return self.params.get(arg) if isinstance(arg, fx.Node) else None

    def label(self, node: fx.Node) -> str:
        stack = node.meta.get("nn_module_stack") or {}
        where = next(reversed(stack.values()))[0] if stack else ""
        return f"{op_name(node.target)}{' in ' + where if where else ''}"

    @staticmethod
    def arg(node: fx.Node, pos: int, key: str, default: object = None) -> object:
        if len(node.args) > pos:
            return node.args[pos]
        return node.kwargs.get(key, default)

    # -- updates
    def produce(self, ref: ParamRef, dim: int, size: int, extra: list[Member] = (), kind: str = "channels") -> Segment:
        """The space that parameter dim ``ref.dims[dim]`` creates (one per parameter, however often used)."""
        key = (ref.name, ref.dims[dim])
        if key not in self._produced:
            self._produced[key] = self.spaces.new(size, kind)
            self.spaces.add_member(self._produced[key], Member(ref.name, ref.dims[dim]))
            for m in extra:
                self.spaces.add_member(self._produced[key], m)
        return Segment(self._produced[key])

    def member(self, segs: tuple[Segment, ...] | None, tensor: str, dim: int, role: str, **kw) -> None:
        """``tensor``'s ``dim`` holds the channels of ``segs`` in order."""
        offset = 0
        for seg in self.spaces.resolve(segs or ()):
            self.spaces.add_member(seg.space, Member(tensor, dim, offset, seg.factor, role, **kw))
            offset += self.spaces.size[seg.space] * seg.factor

    def block(self, segs: tuple[Segment, ...] | None, reason: str) -> None:
        for seg in segs or ():
            self.spaces.block(seg.space, reason)

    def block_value(self, value: Value, reason: str) -> None:
        for segs in value.values():
            self.block(segs, reason)

    def unknown(self, node: fx.Node, why: str = "no coupling rule") -> Value:
        """Treat ``node`` as opaque: every channel space it reads becomes unprunable."""
        tracked = [a for a in node.all_input_nodes if self.value(a)]
        if tracked:
            self.unknown_ops.append(f"{self.label(node)}: {why}")
        for arg in tracked:
            self.block_value(self.value(arg), f"read by {self.label(node)}, which has {why}")
        return {}

    def tie(self, a: tuple[Segment, ...], b: tuple[Segment, ...], node: fx.Node) -> tuple[Segment, ...]:
        if not self.spaces.tie(a, b):
            self.block(a, f"{self.label(node)} joins unequal layouts")
            self.block(b, f"{self.label(node)} joins unequal layouts")
        return a

    # -- the walk
    def visit(self, node: fx.Node) -> Value | list[Value]:
        """The value of ``node``'s output, from the rule for its op (an op without one blocks what it reads)."""
        if node.op == "placeholder":
            if node.target in self._param_names:
                self.params[node] = ParamRef(self._param_names[node.target], tuple(range(len(self.shape(node) or ()))))
            return {}
        if node.op == "output":
            for arg in node.all_input_nodes:
                for v in _flat_values(self.values.get(arg, {})):
                    self.block_value(v, "tied to a model output")
            return {}
        if node.op != "call_function":
            return self.unknown(node)
        if not isinstance(node.meta.get("val"), torch.Tensor | list | tuple):
            return {}  # no tensor comes out (shape assertions, scalars): nothing to couple
        rule = self.rules.get(op_name(node.target))
        if rule is None:
            return self.unknown(node)
        try:
            return rule(self, node)
        except Exception as exc:  # a rule that meets a form it does not know must not crash the capture
            return self.unknown(node, f"a coupling rule that failed on this call ({type(exc).__name__}: {exc})")


def _flat_values(v: Value | list[Value]) -> list[Value]:
    return v if isinstance(v, list) else [v]
