"""A structured-pruning session: capture, select and score once, then plan many times.

``prune`` makes one plan from it; ``analyze`` shows a plan without applying it; ``sensitivity`` and
``allocate`` try many plans on copies; ``iterative_prune`` commits a plan and keeps planning on the
smaller model, all without capturing the graph again.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from .criteria import GroupWeights, get_criterion
from .errors import InvalidParameterError, PruningError
from .graph import Group, capture
from .inputs import Inputs, as_batches, as_inputs
from .methods import Latency, Macs, Structured, Target
from .plan import Plan, apply
from .progress import phase
from .results import UnitReport
from .statistics import collect_statistics
from .structured import (
    Shadow,
    exclusion,
    global_drops,
    group_key,
    layer_drops,
    plan_from_drops,
    runnable_groups,
    unit_report,
)
from .transaction import eval_mode


def default_criterion(model: nn.Module, batches: list) -> str:
    """``activation`` for a causal language model given calibration data (magnitude ruins them: SmolLM2's
    perplexity went 17.5 -> 1,724 at 5% of FFN channels, activation gave 19.6 at 10%), else ``magnitude``.

    >>> default_criterion(nn.Linear(2, 2), [])
    'magnitude'
    """
    causal = type(model).__name__.endswith("ForCausalLM") or getattr(getattr(model, "config", None), "is_decoder", 0)
    return "activation" if causal and batches else "magnitude"


class Planner:
    """Structured pruning of ``model`` as ``method`` selects it (units, ignore, criterion, scope).

    >>> import secateur as sc
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> planner = Planner(net, sc.Structured(sparsity=0.5), torch.randn(1, 8))
    >>> [planner.predict(planner.plan(sparsity=s))[0] for s in (0.25, 0.5)]
    [134, 90]
    """

    def __init__(self, model: nn.Module, method: Structured, example_inputs: object, calibration: object = None,
                 loss_fn: Callable = F.cross_entropy, progress: bool = False) -> None:
        self.model, self.method, self.loss_fn, self.progress = model, method, loss_fn, progress
        self.inputs: Inputs = as_inputs(example_inputs)
        if not self.inputs:
            raise PruningError("structured pruning needs example_inputs=... to trace the model's couplings")
        self.batches = as_batches(calibration)
        with eval_mode(model), phase("capturing the graph", progress):
            self.shapes = self.inputs.output_shapes(model)
            self.graph = capture(model, self.inputs.args, self.inputs.kwargs)
            self.shadow = Shadow(model, self.inputs, self.shapes)
            self.groups, self._unrunnable = runnable_groups(self.shadow, self._selected())
        self._scores: dict[int, torch.Tensor] | None = None

    def _selected(self) -> list[Group]:
        return [g for g in self.graph.prunable if exclusion(g, self.method) is None]

    def reason(self, group: Group) -> str | None:
        """Why ``group`` is not pruned (None when it is a candidate)."""
        if not group.prunable:
            return group.blocked[0] if group.blocked else "a single unit, or no layer produces it"
        return exclusion(group, self.method) or self._unrunnable.get(group.id)

    @property
    def skipped(self) -> dict[str, str]:
        """Every group not pruned, described, with the reason."""
        return {g.describe(): r for g in self.graph.groups if (r := self.reason(g)) is not None}

    @property
    def keys(self) -> dict[str, Group]:
        """Candidate groups by the key ``ratios=`` and ``sensitivity`` use."""
        return {group_key(g): g for g in self.groups}

    @property
    def scores(self) -> dict[int, torch.Tensor]:
        """One importance score per unit of each candidate group (computed once)."""
        if self._scores is None:
            criterion = get_criterion(self.method.criterion or default_criterion(self.model, self.batches))
            stats = collect_statistics(self.model, criterion, self.batches, self.loss_fn, self.progress)
            with torch.no_grad():
                self._scores = {g.id: criterion.unit_scores(GroupWeights.of(self.model, g, stats)).float()
                                for g in self.groups}
        return self._scores

    def _require_groups(self) -> None:
        if not self.groups:
            kinds = sorted({g.kind for g in self.graph.prunable})
            raise PruningError(f"no prunable groups for units={self.method.width_units} (this model has: "
                               f"{kinds or 'none'}); run secateur.analyze(model, example_inputs) to see what blocks "
                               "the others")

    def plan(self, sparsity: float | None = None, ratios: dict[str, float] | None = None,
             target: Target | None = None) -> Plan:
        """The cuts for ``sparsity`` and per-group ``ratios``, or for a ``target``; with no argument, what
        the session's method asks for."""
        if sparsity is None and ratios is None and target is None:
            sparsity, ratios, target = self.method.sparsity, self.method.ratios, self.method.target
        self._require_groups()
        if target is not None:
            return self._plan_for_target(target)
        self._check_ratios(ratios or {})
        plan = self._plan_for_sparsity(sparsity or 0.0, ratios)
        if plan.is_empty() and (sparsity or 0) > 0:
            largest = max(g.size for g in self.groups)
            raise PruningError(f"sparsity={sparsity} removes nothing: the largest selected group has {largest} "
                               f"units, so at least {1 / largest:.3g} is needed (or round_to is too big)")
        return plan

    def _check_ratios(self, ratios: dict[str, float]) -> None:
        unknown = sorted(set(ratios) - set(self.keys))
        if unknown:
            raise InvalidParameterError(f"ratios= names {unknown[0]!r}, which is not a prunable group here; valid "
                                        f"keys: {', '.join(self.keys)} (secateur.analyze lists them)")

    def _plan_for_sparsity(self, sparsity: float, ratios: dict[str, float] | None = None) -> Plan:
        m = self.method
        if m.scope == "global":
            return plan_from_drops(self.groups, global_drops(self.groups, self.scores, sparsity, m.round_to))
        return plan_from_drops(self.groups, layer_drops(self.groups, self.scores, sparsity, m.round_to, ratios))

    def predict(self, plan: Plan) -> tuple[int, int]:
        """(params, MACs) after ``plan``, counted on a shape-only copy."""
        return self.shadow.run(plan)

    def units(self, plan: Plan) -> dict[str, UnitReport]:
        """What ``plan`` keeps of every candidate group, with the scores."""
        return {group_key(g): unit_report(g, self.scores[g.id], plan) for g in self.groups}

    def _plan_for_target(self, target: Target) -> Plan:
        """Bisect a uniform sparsity until the predicted MACs / params fraction (or measured latency) fits."""
        if isinstance(target, Latency):
            measure = lambda s: self.latency_ms(self._plan_for_sparsity(s), target)  # noqa: E731
            goal, lo, hi, steps = target.ms, 0.0, 0.95, 7
        else:
            index = 1 if isinstance(target, Macs) else 0
            dense = self.predict(Plan())[index]
            measure = lambda s: self.predict(self._plan_for_sparsity(s))[index] / dense  # noqa: E731
            goal, lo, hi, steps = target.fraction, 0.0, 0.999, 24
        if measure(hi) > goal:
            raise PruningError(f"target {target} is out of reach: {measure(hi):.3g} with {hi:.1%} of every selected "
                               "group removed; relax the target, or prune more unit kinds / fewer ignore= patterns")
        if measure(lo) <= goal:
            return Plan()
        for _ in range(steps):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if measure(mid) <= goal else (mid, hi)
        return self._plan_for_sparsity(hi)

    def latency_ms(self, plan: Plan, target: Latency) -> float:
        """onnxruntime latency of the model after ``plan``, on ``target.batch_size`` copies of the example."""
        from .latency import ort_latency_ms
        from .onnx_export import onnx_of

        pruned = apply(copy.deepcopy(self.model), plan, remember=False)
        batch = self.inputs.repeat_batch(target.batch_size)
        with tempfile.TemporaryDirectory(prefix="secateur-lat-") as tmp:
            return ort_latency_ms(onnx_of(pruned, batch, tmp), batch, runs=target.runs)

    def commit(self, plan: Plan) -> None:
        """After ``plan`` was applied to the model: renumber every candidate group for the smaller model,
        so planning goes on without a new capture (scores are recomputed from the current weights)."""
        self.groups = [g for g in (_shrunk(g, plan.cuts) for g in self.groups) if g.size > 1]
        self._scores = None


def _remap(index: int, removed: list[int]) -> int:
    return index - sum(r < index for r in removed)


def _shrunk(group: Group, cuts: dict[str, dict[int, list[int]]]) -> Group:
    """``group`` after ``cuts``: its removed units gone, the rest renumbered, every member's offset shifted."""
    first = next(m for m in group.members if m.role == "out")
    removed_first = set(cuts.get(first.tensor, {}).get(first.dim, []))
    gone = sum(first.indices([c])[0] in removed_first for c in range(group.size))
    members = []
    for m in group.members:
        removed = sorted(cuts.get(m.tensor, {}).get(m.dim, []))
        offset = _remap(m.offset, removed)
        stride = _remap(m.offset + m.stride, removed) - offset if m.repeat > 1 else m.stride
        members.append(replace(m, offset=offset, stride=stride))
    return replace(group, size=group.size - gone, members=members)
