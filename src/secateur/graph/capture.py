"""Capture a model's computation once (``make_fx`` above autograd, or ``torch.export``) and derive its
coupled groups.

The walk (``walk.py``) visits every ATen node in order and asks the rule for its op what the output's
*value* is. The rules come from one table per capture: the built-in families (``rules/``), then the
user's registered rules, then the capture's private ``rules=``, each overriding the one before. An op
without a rule blocks the spaces it reads: secateur never guesses.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from ..errors import GraphCaptureError
from ..transaction import eval_mode
from .registry import user_rules
from .rules import BUILTIN
from .spaces import Group
from .table import Rule, RuleTable
from .walk import Grouping, Walk


@dataclass
class CouplingGraph:
    """What ``capture`` found: coupled groups, and the ops it did not understand."""

    groups: list[Group]
    unknown_ops: list[str] = field(default_factory=list)

    @property
    def prunable(self) -> list[Group]:
        return [g for g in self.groups if g.prunable]


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
            if mode == "fake" and _data_dependent(gm):
                continue  # sizes that depend on values (MoE routing): trace again with real tensors
            placeholders = [n.target for n in gm.graph.nodes if n.op == "placeholder"]
            return gm, dict(zip(placeholders, params, strict=False))
        except Exception as exc:  # noqa: PERF203  (fall through to the next capture)
            error = exc
    raise error


def _data_dependent(gm: fx.GraphModule) -> bool:
    """Whether a traced graph has sizes that depend on tensor values (symbols rules cannot compare)."""
    for node in gm.graph.nodes:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and any(isinstance(s, torch.SymInt) for s in val.shape):
            return True
    return False


def _export_graph(model: nn.Module, args: tuple, kwargs: dict) -> tuple[fx.GraphModule, dict[str, str]]:
    ep = torch.export.export(model, tuple(args), kwargs, strict=False)
    sig = ep.graph_signature
    return ep.graph_module, {**sig.inputs_to_parameters, **sig.inputs_to_buffers}


def _uses_cache(config: object, depth: int = 0) -> bool:
    if config is None or not hasattr(config, "to_dict") or depth > 2:
        return False
    return bool(getattr(config, "use_cache", False)) or any(_uses_cache(v, depth + 1) for v in vars(config).values())


def _makes_cache(model: nn.Module) -> bool:
    """Whether a Hugging Face model would return a KV cache: ``use_cache`` on its config or a nested one
    (``text_config``, ColPali's ``vlm_config``), and a forward that takes ``use_cache`` (by name or in
    ``**kwargs``)."""
    if not _uses_cache(getattr(model, "config", None)):
        return False
    params = inspect.signature(model.forward).parameters.values()
    return any(p.name == "use_cache" or p.kind is p.VAR_KEYWORD for p in params)


def trace_graph(model: nn.Module, example_inputs: tuple, example_kwargs: dict | None = None
                ) -> tuple[fx.GraphModule, dict[str, str]]:
    """Capture ``model`` once as an ATen graph (make_fx, then torch.export as a fallback) and map its
    parameter placeholders to qualified names."""
    example_kwargs = dict(example_kwargs or {})
    if _makes_cache(model):
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


def capture(model: nn.Module, example_inputs: tuple, example_kwargs: dict | None = None,
            rules: Mapping[str, Rule] | None = None, grouping: Grouping = "finer") -> CouplingGraph:
    """Find the coupled groups of ``model`` from one run on ``example_inputs``.

    ``rules`` (a :class:`RuleTable`) applies to this capture only, over the built-in and registered rules.
    ``grouping`` says what grouped convs and GroupNorm lose: ``"channels"`` (channel ``j`` of every group, so
    groups stay equal), ``"groups"`` (whole groups) or ``"finer"`` (per layer, whichever gives more units).

    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> g = capture(net, (torch.randn(1, 4),))
    >>> [x.describe() for x in g.prunable]
    ['0.out => 2.in']
    >>> opaque = RuleTable({"relu": lambda walk, node: walk.unknown(node, "a private rule")})
    >>> capture(net, (torch.randn(1, 4),), rules=opaque).unknown_ops
    ['relu: a private rule']
    """
    gm, names = trace_graph(model, example_inputs, example_kwargs)
    walk = Walk(gm, _canonical_names(model, names), BUILTIN + user_rules() + RuleTable(rules or {}), grouping)
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
