"""Structured pruning: which coupled groups a method selects, which of them the model's code can follow,
and shape-only copies to try plans on (see ``widths.py`` for which units go)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .counting import count_macs, count_params, macs_and_shapes, meta_copy
from .errors import InputError, PruningError
from .graph import CouplingGraph, Group
from .inputs import Inputs
from .methods import Macs, Params, Structured
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


def embedding_params(model: nn.Module) -> int:
    """Parameters of the model's embedding tables (an output layer tied to one is the same tensor).

    >>> embedding_params(nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2)))
    40
    """
    tables = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding)}
    return sum(tables.values())


class Shadow:
    """Copies of a model to try plans on: shape-only (meta device) when its forward runs there,
    else real deep copies (e.g. Hugging Face mask code that reads tensor values).

    ``shapes`` are the dense model's output shapes; whether meta works is learnt on first failure.
    """

    def __init__(self, model: nn.Module, inputs: Inputs, shapes: list) -> None:
        self.model, self.inputs, self.shapes = model, inputs, shapes
        self.meta = True
        self._last: tuple[tuple, tuple[int, int, int]] | None = None  # the last plan that ran, and its counts

    def reset(self, model: nn.Module) -> None:
        """Try plans on ``model`` from now on (the planner's model after a committed plan)."""
        self.model, self._last = model, None

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

    def run(self, plan: Plan, macs: bool = True) -> tuple[int, int, int]:
        """(params, MACs, embedding params) after ``plan``, measured on a copy (MACs 0 unless ``macs``)."""
        if self._last is not None and not plan.masks and self._last[0] == _key(plan):  # ``runs`` just measured it
            return self._last[1]
        try:
            model, inputs = self.copy(plan)
            return count_params(model), count_macs(model, inputs) if macs else 0, embedding_params(model)
        except Exception as err:
            if self.meta and self._meta_unusable():
                return self.run(plan, macs)
            cause = err.__cause__ if isinstance(err, InputError) and err.__cause__ else err
            raise PruningError(f"the model's code cannot run with this plan's sizes ({type(cause).__name__}: "
                               f"{str(cause).splitlines()[0][:160]}); it ran with one unit fewer per group, so the "
                               "code limits how far a size may shrink: prune fewer units, or ignore=[...] the "
                               "layers involved") from err

    def runs(self, plan: Plan) -> bool:
        """Does the model still run, with the same output shapes, after ``plan``?"""
        try:
            model, inputs = self.copy(plan)
            macs, shapes = macs_and_shapes(model, inputs)
        except Exception:  # any failure means the module code cannot follow this plan
            if self.meta and self._meta_unusable():
                return self.runs(plan)
            return False
        if not plan.masks:
            self._last = (_key(plan), (count_params(model), macs, embedding_params(model)))
        return shapes == self.shapes


def _key(plan: Plan) -> tuple:
    """What a plan does to a shadow copy (its swaps are already made on the planner's subject)."""
    cuts = tuple((t, tuple((d, tuple(i)) for d, i in sorted(dims.items()))) for t, dims in sorted(plan.cuts.items()))
    return cuts, tuple(plan.blocks), tuple(plan.biases)


def kept_fraction(shadow: Shadow, dense: tuple[int, int, int], plan: Plan, target: Macs | Params) -> float:
    """What ``plan`` keeps of the dense counts ``dense`` (``shadow.run(Plan())``) as ``target`` counts them:
    MACs, params, or params outside the embedding tables (``Params(embeddings=False)``)."""
    if isinstance(target, Macs):
        return shadow.run(plan)[1] / dense[1]
    params, _, embedding = shadow.run(plan, macs=False)
    skip = 0 if target.embeddings else 1
    return (params - skip * embedding) / (dense[0] - skip * dense[2])


def runnable_groups(shadow: Shadow, groups: list[Group]) -> tuple[list[Group], dict[int, str]]:
    """Keep the groups the model's own code can follow (exported graphs hide hard-coded sizes such as
    ``x.view(-1, 512)``): each group loses one unit on a copy. One forward pass when all is well."""
    def shrink(gs: list[Group]) -> Plan:
        plan = Plan()
        for g in gs:
            cut_units(plan, g.members, [0])
        return plan

    if not groups or shadow.runs(shrink(groups)):
        return groups, {}
    ok = [g for g in groups if shadow.runs(shrink([g]))]
    reason = "the model's code hard-codes this size (a forward pass failed when it shrank)"
    return ok, {g.id: reason for g in groups if g not in ok}


def restricted(plan: Plan, group: Group) -> Plan:
    """The part of ``plan``'s cuts that falls on ``group``'s members."""
    part = Plan()
    for m in group.members:
        mine = set(m.indices(list(range(group.size))))
        cut = [i for i in plan.cuts.get(m.tensor, {}).get(m.dim, []) if i in mine]
        if cut:
            part.add_cut(m.tensor, m.dim, cut)
    return part


def group_key(group: Group) -> str:
    """The name ``Structured(ratios=...)`` and ``sensitivity`` use for a group: its first producing layer."""
    return next((m.tensor.rpartition(".")[0] for m in group.members if m.role == "out"), group.describe())


def cut_units(plan: Plan, members: list, units: list[int]) -> None:
    """Record in ``plan`` that ``units`` leave every one of ``members``."""
    for m in members if units else []:
        plan.add_cut(m.tensor, m.dim, m.indices(units))


def unit_report(group: Group, scores: torch.Tensor, plan: Plan) -> UnitReport:
    """Which units of ``group`` the plan keeps, with every unit's importance score."""
    first = next(m for m in group.members if m.role == "out")
    removed = set(plan.cuts.get(first.tensor, {}).get(first.dim, []))
    kept = [c for c in range(group.size) if first.indices([c])[0] not in removed]
    return UnitReport(group.kind, group.size, kept, [round(float(v), 6) for v in scores])
