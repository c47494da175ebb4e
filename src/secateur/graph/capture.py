"""Capture a model's computation once (torch.fx + shape propagation) and derive its coupled groups."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import GraphCaptureError
from ..transaction import eval_mode
from . import rules
from .spaces import Group, Member, Segment, Spaces

Value = dict[int, tuple[Segment, ...]]
_METADATA_OPS = ("size", "dim", "numel", getattr, operator.getitem)


@dataclass
class CouplingGraph:
    """What ``capture`` found: coupled groups, and the ops it did not understand."""

    groups: list[Group]
    unknown_ops: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]


class Walk:
    """State of one pass over the graph; rules call its helpers."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.spaces = Spaces()
        self.values: dict[fx.Node, Value] = {}
        self.unknown_ops: list[str] = []
        self._produced: dict[str, int] = {}

    # -- queries
    def value(self, arg: object) -> Value:
        return self.values.get(arg, {}) if isinstance(arg, fx.Node) else {}

    def shape(self, node: fx.Node) -> tuple[int, ...] | None:
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape) if hasattr(meta, "shape") else None

    def name(self, node: fx.Node) -> str:
        return str(node.target)

    def label(self, node: fx.Node) -> str:
        target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", node.target)
        return f"{node.name} ({node.op} {target})"

    @staticmethod
    def arg(node: fx.Node, pos: int, key: str, default: object) -> object:
        if len(node.args) > pos:
            return node.args[pos]
        return node.kwargs.get(key, default)

    # -- updates
    def produce(self, name: str, size: int, members: list[Member]) -> int:
        """The output space of module ``name`` (one per module, even when it is called twice)."""
        if name not in self._produced:
            self._produced[name] = self.spaces.new(size)
            for m in members:
                self.spaces.add_member(self._produced[name], m)
        return self._produced[name]

    def block_segments(self, seg_lists: list[tuple[Segment, ...]], reason: str) -> None:
        for segs in seg_lists:
            for seg in segs:
                self.spaces.block(seg.space, reason)

    def unknown(self, node: fx.Node, why: str = "no coupling rule") -> Value:
        """Treat ``node`` as opaque: every channel space it reads becomes unprunable."""
        label = self.label(node)
        self.unknown_ops.append(f"{label}: {why}")
        for arg in node.all_input_nodes:
            self.block_segments(list(self.value(arg).values()), f"read by {label}, which has {why}")
        return {}

    def merge_broadcast(self, node: fx.Node, inputs: list[fx.Node], skip_dim: int | None = None) -> Value:
        """Element-wise op: tensors' channel spaces on the same output dim are tied together."""
        out_shape = self.shape(node)
        out: Value = {}
        untracked: set[int] = set()
        for arg in inputs:
            shape = self.shape(arg)
            if shape is None:
                continue
            shift = len(out_shape) - len(shape)
            value = self.value(arg)
            for d, size in enumerate(shape):
                od = d + shift
                if od == skip_dim:
                    continue
                segs = value.get(d)
                if segs is None:
                    if size > 1:
                        untracked.add(od)
                elif size != out_shape[od]:
                    self.block_segments([segs], f"{self.label(node)} broadcasts that dim")
                elif od not in out:
                    out[od] = segs
                elif not self._tie(out[od], segs):
                    self.block_segments([out[od], segs], f"{self.label(node)} joins unequal layouts")
        for od in untracked & out.keys():
            self.block_segments([out.pop(od)], f"{self.label(node)} meets an untracked tensor")
        return out

    def _tie(self, a: tuple[Segment, ...], b: tuple[Segment, ...]) -> bool:
        if len(a) != len(b) or any(x.factor != y.factor for x, y in zip(a, b, strict=True)):
            return False
        return all(self.spaces.union(x.space, y.space) for x, y in zip(a, b, strict=True))

    # -- the walk
    def visit(self, node: fx.Node) -> Value:
        if node.op == "placeholder":
            shape = self.shape(node)
            if not shape or len(shape) < 2:
                return {}
            space = self.spaces.new(shape[1])
            self.spaces.block(space, "tied to a model input")
            return {1: (Segment(space),)}
        if node.op == "output":
            for arg in node.all_input_nodes:
                self.block_segments(list(self.value(arg).values()), "tied to a model output")
            return {}
        if node.op == "get_attr":
            return {}
        if node.op == "call_module":
            module = self.gm.get_submodule(node.target)
            rule = rules.module_rule(module)
            return rule(self, node, module) if rule else self.unknown(node, f"no rule for {type(module).__name__}")
        if node.target in _METADATA_OPS and self.shape(node) is None:
            return {}
        rule = rules.FUNCTION_RULES.get(node.target)
        return rule(self, node) if rule else self.unknown(node)


def trace(model: nn.Module, example_inputs: tuple) -> fx.GraphModule:
    """Symbolically trace ``model`` and annotate every node with its shape on ``example_inputs``."""
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable Python
        raise GraphCaptureError(
            f"torch.fx could not trace {type(model).__name__}: {exc}. Structured pruning needs a model "
            "without data-dependent Python control flow; prune its traceable submodules instead."
        ) from exc
    with torch.no_grad(), eval_mode(gm):
        ShapeProp(gm).propagate(*example_inputs)
    return gm


def capture(model: nn.Module, example_inputs: tuple) -> CouplingGraph:
    """Find the coupled groups of ``model`` from one run on ``example_inputs``.

    >>> g = capture(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), (torch.randn(1, 4),))
    >>> [x.describe() for x in g.prunable]
    ['0.out => 2.in']
    """
    gm = trace(model, example_inputs)
    walk = Walk(gm)
    for node in gm.graph.nodes:
        walk.values[node] = walk.visit(node)
    return CouplingGraph(groups=walk.spaces.groups(), unknown_ops=walk.unknown_ops)
