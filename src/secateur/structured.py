"""Structured pruning: which coupled groups can go, how units are ranked, and plans from unit choices."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .counting import count_macs, count_params, meta_copy
from .graph import CouplingGraph, Group
from .inputs import Inputs
from .methods import Structured
from .methods.base import match
from .plan import Plan, apply
from .results import UnitReport


def exclusion(group: Group, method: Structured) -> str | None:
    """Why ``method`` leaves a prunable group alone (its units or ignore patterns), or None."""
    producers = {m.tensor.rpartition(".")[0] for m in group.members if m.role == "out"}
    if any(match(name, method.ignore) for name in producers):
        return "matches ignore="
    units = method.width_units
    if units is not None and group.kind not in units:
        return f"unit {group.kind!r} not in units="
    return None


def selectable_groups(graph: CouplingGraph, method: Structured) -> list[Group]:
    """Prunable groups that ``method``'s units and ignore patterns select."""
    return [g for g in graph.prunable if exclusion(g, method) is None]


class Shadow:
    """Copies of a model to try plans on: shape-only (meta device) when its forward runs there,
    else real deep copies (e.g. Hugging Face mask code that reads tensor values).

    ``shapes`` are the dense model's output shapes; whether meta works is learnt on first failure.
    """

    def __init__(self, model: nn.Module, inputs: Inputs, shapes: list) -> None:
        self.model, self.inputs, self.shapes = model, inputs, shapes
        self.meta = True

    def copy(self, plan: Plan) -> tuple[nn.Module, Inputs]:
        """A copy of the model with ``plan`` applied, and the inputs to run it on."""
        model, inputs = (meta_copy(self.model), self.inputs.to_meta()) if self.meta else (
            copy.deepcopy(self.model), self.inputs)
        return apply(model, plan, remember=False), inputs

    def _meta_unusable(self) -> bool:
        """After a failure on meta: does the *unpruned* model fail there too? Then use real copies."""
        try:
            self.inputs.to_meta().output_shapes(meta_copy(self.model))
            return False
        except Exception:  # data-dependent code cannot run on meta tensors
            self.meta = False
            return True

    def run(self, plan: Plan) -> tuple[int, int]:
        """(params, MACs) after ``plan``, measured on a copy."""
        try:
            model, inputs = self.copy(plan)
            return count_params(model), count_macs(model, inputs)
        except Exception:
            if self.meta and self._meta_unusable():
                return self.run(plan)
            raise

    def runs(self, plan: Plan) -> bool:
        """Does the model still run, with the same output shapes, after ``plan``?"""
        try:
            model, inputs = self.copy(plan)
            return inputs.output_shapes(model) == self.shapes
        except Exception:  # any failure means the module code cannot follow this plan
            if self.meta and self._meta_unusable():
                return self.runs(plan)
            return False


def runnable_groups(shadow: Shadow, groups: list[Group]) -> tuple[list[Group], dict[int, str]]:
    """Keep the groups the model's own code can follow (exported graphs hide hard-coded sizes such as
    ``x.view(-1, 512)``): each group loses one unit on a copy. One forward pass when all is well."""
    shrink = lambda gs: plan_from_drops(gs, {g.id: [0] for g in gs})  # noqa: E731
    if not groups or shadow.runs(shrink(groups)):
        return groups, {}
    ok = [g for g in groups if shadow.runs(shrink([g]))]
    reason = "the model's code hard-codes this size (a forward pass failed when it shrank)"
    return ok, {g.id: reason for g in groups if g not in ok}


def keep_count(size: int, sparsity: float, round_to: int) -> int:
    """Units kept when removing ``sparsity`` of ``size``, rounded up to ``round_to``, at least one.

    >>> keep_count(64, 0.5, 1), keep_count(30, 0.5, 8), keep_count(4, 0.99, 1)
    (32, 16, 1)
    """
    keep = max(size - math.floor(sparsity * size), 1)
    return min(size, math.ceil(keep / round_to) * round_to)


def group_key(group: Group) -> str:
    """The name ``Structured(ratios=...)`` and ``sensitivity`` use for a group: its first producing layer."""
    return next((m.tensor.rpartition(".")[0] for m in group.members if m.role == "out"), group.describe())


def _lowest(scores: torch.Tensor, n: int) -> list[int]:
    """Indices of the ``n`` lowest scores (ties broken by position)."""
    return sorted(torch.argsort(scores, stable=True)[:n].tolist())


def layer_drops(groups: list[Group], scores: dict, sparsity: float, round_to: int,
                ratios: dict[str, float] | None = None) -> dict[int, list[int]]:
    """Each group loses its own ``ratios[key]`` (or ``sparsity``) of its lowest-scored units."""
    return {g.id: _lowest(scores[g.id], g.size - keep_count(g.size, (ratios or {}).get(group_key(g), sparsity),
                                                             round_to)) for g in groups}


def global_drops(groups: list[Group], scores: dict, sparsity: float, round_to: int) -> dict[int, list[int]]:
    """Rank units of all groups together (scores normalised by each group's mean)."""
    pooled = sorted((float(s) / (float(scores[g.id].mean()) + 1e-12), g.id, i)
                    for g in groups for i, s in enumerate(scores[g.id]))
    budget = math.floor(sparsity * sum(g.size for g in groups))
    n_drop = {g.id: 0 for g in groups}
    size = {g.id: g.size for g in groups}
    for _, gid, _ in pooled:
        if budget == 0:
            break
        if n_drop[gid] < size[gid] - 1:
            n_drop[gid] += 1
            budget -= 1
    keep = {g.id: min(g.size, math.ceil((g.size - n_drop[g.id]) / round_to) * round_to) for g in groups}
    return {g.id: _lowest(scores[g.id], g.size - keep[g.id]) for g in groups}


def plan_from_drops(groups: list[Group], drops: dict[int, list[int]]) -> Plan:
    """Turn units removed per group into tensor cuts for every member."""
    plan = Plan()
    for g in groups:
        if drops.get(g.id):
            for m in g.members:
                plan.add_cut(m.tensor, m.dim, m.indices(drops[g.id]))
    return plan


def unit_report(group: Group, scores: torch.Tensor, plan: Plan) -> UnitReport:
    """Which units of ``group`` the plan keeps, with every unit's importance score."""
    first = next(m for m in group.members if m.role == "out")
    removed = set(plan.cuts.get(first.tensor, {}).get(first.dim, []))
    kept = [c for c in range(group.size) if first.indices([c])[0] not in removed]
    return UnitReport(group.kind, group.size, kept, [round(float(v), 6) for v in scores])
