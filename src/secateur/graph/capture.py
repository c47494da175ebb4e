"""Capture a model's computation once (``make_fx`` above autograd, or ``torch.export``) and derive its
coupled groups.

The walk visits every ATen node in order and asks the rule registered for its op (``rules.py``,
``layers.py``) what the output's *value* is: for each dimension, the channel segments tracked on
it. Parameters are tracked separately as :class:`ParamRef` so ops that meet a parameter (a linear's
weight, an RMSNorm scale) can make it a member of a space. An op without a rule blocks the spaces
it reads: secateur never guesses.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from ..errors import GraphCaptureError
from ..transaction import eval_mode
from .spaces import Group, Member, Segment, Spaces

Value = dict[int, tuple[Segment, ...]]


@dataclass(frozen=True)
class ParamRef:
    """A node that is (a view of) parameter or buffer ``name``; ``dims[i]`` is the parameter dim
    behind the node's dim ``i`` (None for a dim of size one added by a view)."""

    name: str
    dims: tuple[int | None, ...]


@dataclass
class CouplingGraph:
    """What ``capture`` found: coupled groups, and the ops it did not understand."""

    groups: list[Group]
    unknown_ops: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]


def op_name(target: object) -> str:
    """``aten.linear.default`` -> ``linear``; ``operator.getitem`` -> ``getitem``."""
    if target is operator.getitem:
        return "getitem"
    if isinstance(target, torch._ops.OpOverload):
        return target.overloadpacket.__name__
    return getattr(target, "__name__", str(target))


class Walk:
    """State of one pass over the graph; rules call its helpers."""

    def __init__(self, gm: fx.GraphModule, param_names: dict[str, str]) -> None:
        self.gm = gm
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
        from . import rules

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
        rule = rules.rule_for(op_name(node.target))
        if rule is None:
            return self.unknown(node)
        return rule(self, node)


def _flat_values(v: Value | list[Value]) -> list[Value]:
    return v if isinstance(v, list) else [v]


def _make_fx_graph(model: nn.Module, args: tuple, kwargs: dict) -> tuple[fx.GraphModule, dict[str, str]]:
    """Trace ATen ops above autograd (the vocabulary of torch.export's training IR), parameters as inputs."""
    from torch.fx.experimental.proxy_tensor import make_fx

    params = dict([*model.named_parameters(), *model.named_buffers()])
    tensors = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
    static = {k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)}

    def run(p: dict, a: tuple, k: dict) -> object:
        return torch.func.functional_call(model, p, a, {**k, **static})

    error: Exception | None = None
    for mode in ("fake", "real"):  # fake is fastest; real runs code that reads tensor values
        try:
            gm = make_fx(run, tracing_mode=mode, pre_dispatch=True)(params, tuple(args), tensors)
            placeholders = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
            return gm, dict(zip(placeholders, params, strict=False))
        except Exception as exc:  # noqa: PERF203  (fall through to the next capture)
            error = exc
    raise error


def _export_graph(model: nn.Module, args: tuple, kwargs: dict) -> tuple[fx.GraphModule, dict[str, str]]:
    ep = torch.export.export(model, tuple(args), kwargs, strict=False)
    sig = ep.graph_signature
    return ep.graph_module, {**sig.inputs_to_parameters, **sig.inputs_to_buffers}


def trace_graph(model: nn.Module, example_inputs: tuple, example_kwargs: dict | None = None
                ) -> tuple[fx.GraphModule, dict[str, str]]:
    """Capture ``model`` once as an ATen graph (make_fx, then torch.export as a fallback) and map its
    parameter placeholders to qualified names."""
    example_kwargs = dict(example_kwargs or {})
    if getattr(getattr(model, "config", None), "use_cache", False):
        example_kwargs.setdefault("use_cache", False)  # a KV cache object is not a traceable output
    errors = []
    with warnings.catch_warnings(), eval_mode(model), torch.no_grad():
        warnings.simplefilter("ignore")
        for tracer in (_make_fx_graph, _export_graph):
            try:
                return tracer(model, tuple(example_inputs), example_kwargs)
            except Exception as exc:  # noqa: PERF203  tracers raise many types for untraceable Python
                errors.append(exc)
    raise GraphCaptureError(
        f"could not capture {type(model).__name__} with make_fx or torch.export: "
        f"{str(errors[-1]).splitlines()[0][:300]}. Structured pruning needs a model whose forward runs on "
        "example inputs without data-dependent control flow; pass other example_inputs, or prune its "
        "traceable submodules."
    ) from errors[-1]


def capture(model: nn.Module, example_inputs: tuple, example_kwargs: dict | None = None) -> CouplingGraph:
    """Find the coupled groups of ``model`` from one run on ``example_inputs``.

    >>> g = capture(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), (torch.randn(1, 4),))
    >>> [x.describe() for x in g.prunable]
    ['0.out => 2.in']
    """
    gm, names = trace_graph(model, example_inputs, example_kwargs)
    walk = Walk(gm, _canonical_names(model, names))
    for node in gm.graph.nodes:
        walk.values[node] = walk.visit(node)
    return CouplingGraph(groups=walk.spaces.groups(), unknown_ops=walk.unknown_ops)


def _canonical_names(model: nn.Module, names: dict[str, str]) -> dict[str, str]:
    """Map tied parameters to the first name ``named_parameters`` gives them (export may pick another)."""
    first: dict[int, str] = {}
    for n, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        first.setdefault(id(t), n)
    lookup = {n: first[id(t)] for n, t in [*model.named_parameters(remove_duplicate=False),
                                             *model.named_buffers(remove_duplicate=False)]}
    return {ph: lookup.get(fqn, fqn) for ph, fqn in names.items()}
