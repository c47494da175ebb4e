"""Structured pruning: choose channels of coupled groups to remove, as a :class:`Plan`."""

from __future__ import annotations

import copy
import fnmatch
import math
import tempfile

import torch
from torch import nn

from .adapters import sync_attention
from .counting import count_macs, count_params, meta_copy
from .criteria import fpgm, lamp, weight_saliency
from .errors import PruningError
from .graph import CouplingGraph, Group
from .inputs import Inputs
from .methods import Latency, Macs, Params, Structured
from .plan import Plan, apply_cuts
from .statistics import Stats


def _ignored(group: Group, patterns: tuple[str, ...]) -> bool:
    """True when a layer whose *output* channels form this group matches an ignore pattern."""
    producers = {m.tensor.rpartition(".")[0] for m in group.members if m.role == "out"}
    return any(fnmatch.fnmatch(name, p) for name in producers for p in patterns)


def selectable_groups(graph: CouplingGraph, method: Structured) -> list[Group]:
    """Prunable groups that ``method.ignore`` does not exclude."""
    return [g for g in graph.prunable if not _ignored(g, method.ignore)
            and (method.units is None or g.kind in method.units)]


class Shadow:
    """Copies of a model to try plans on: shape-only (meta device) when its forward runs there,
    else real deep copies (e.g. Hugging Face mask code that reads tensor values).

    ``shapes`` are the dense model's output shapes; whether meta works is learnt on first failure.
    """

    def __init__(self, model: nn.Module, inputs: Inputs, shapes: list) -> None:
        self.model, self.inputs, self.shapes = model, inputs, shapes
        self.meta = True

    def _copy(self) -> tuple[nn.Module, Inputs]:
        if self.meta:
            return meta_copy(self.model), self.inputs.to_meta()
        return copy.deepcopy(self.model), self.inputs

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
        shadow, inputs = self._copy()
        apply_cuts(shadow, plan)
        sync_attention(shadow)
        try:
            return count_params(shadow), count_macs(shadow, inputs)
        except Exception:
            if self.meta and self._meta_unusable():
                return self.run(plan)
            raise

    def runs(self, plan: Plan) -> bool:
        """Does the model still run, with the same output shapes, after ``plan``?"""
        shadow, inputs = self._copy()
        try:
            apply_cuts(shadow, plan)
            sync_attention(shadow)
            return inputs.output_shapes(shadow) == self.shapes
        except Exception:  # any failure means the module code cannot follow this plan
            if self.meta and self._meta_unusable():
                return self.runs(plan)
            return False


def runnable_groups(shadow: Shadow, groups: list[Group]) -> tuple[list[Group], dict[int, str]]:
    """Keep the groups the model's own code can follow (exported graphs hide hard-coded sizes such as
    ``x.view(-1, 512)``): each group loses one channel on a copy. One forward pass when all is well."""
    shrink = lambda gs: plan_from_drops(gs, {g.id: [0] for g in gs})  # noqa: E731
    if shadow.runs(shrink(groups)):
        return groups, {}
    ok = [g for g in groups if shadow.runs(shrink([g]))]
    reason = "the model's code hard-codes this size (a forward pass failed when it shrank)"
    return ok, {g.id: reason for g in groups if g not in ok}


def _slices(tensor: torch.Tensor, member, size: int) -> torch.Tensor:
    """The member's positions of every unit of the group, as a ``(size, -1)`` matrix."""
    idx = torch.tensor(member.indices(list(range(size))), device=tensor.device)
    block = tensor.movedim(member.dim, 0).index_select(0, idx)
    return block.reshape(member.repeat, size, -1).transpose(0, 1).reshape(size, -1)


def group_scores(model: nn.Module, group: Group, criterion: str, stats: Stats | None = None) -> torch.Tensor:
    """One importance score per unit of ``group``, from every weight tensor it appears in."""
    params = dict(model.named_parameters(remove_duplicate=False))
    members = [m for m in group.members if m.tensor in params]
    if criterion == "random":
        return torch.rand(group.size)
    if criterion == "fpgm":
        rows = [_slices(params[m.tensor].detach().float(), m, group.size) for m in members if m.role == "out"]
        return fpgm(torch.cat(rows, 1))
    if criterion == "bn_scale":
        mods = dict(model.named_modules())
        gammas = [m for m in members if m.tensor.endswith(".weight") and
                  isinstance(mods.get(m.tensor.rpartition(".")[0]), nn.modules.batchnorm._NormBase)]
        if gammas:
            return sum(_slices(params[m.tensor].detach().float().abs(), m, group.size).sum(1) for m in gammas)
        criterion = "l2"  # no BatchNorm in this group: fall back to the weights' L2 norm
    base = "l2" if criterion == "lamp" else criterion
    total = sum(_slices(weight_saliency(params[m.tensor], base, (stats or {}).get(m.tensor)), m, group.size).sum(1)
                for m in members)
    if criterion in ("magnitude", "l2"):
        return total.sqrt()
    return lamp(total) if criterion == "lamp" else total


def keep_count(size: int, sparsity: float, round_to: int) -> int:
    """Channels kept when removing ``sparsity`` of ``size``, rounded up to ``round_to``, at least one.

    >>> keep_count(64, 0.5, 1), keep_count(30, 0.5, 8), keep_count(4, 0.99, 1)
    (32, 16, 1)
    """
    keep = max(size - math.floor(sparsity * size), 1)
    return min(size, math.ceil(keep / round_to) * round_to)


def group_key(group: Group) -> str:
    """The name ``Structured(ratios=...)`` and ``sensitivity`` use for a group: its first producing layer."""
    return next((m.tensor.rpartition(".")[0] for m in group.members if m.role == "out"), group.describe())


def _layer_drops(groups, scores, sparsity, round_to, ratios=None) -> dict[int, list[int]]:
    drops = {}
    for g in groups:
        n_drop = g.size - keep_count(g.size, (ratios or {}).get(group_key(g), sparsity), round_to)
        drops[g.id] = sorted(torch.argsort(scores[g.id])[:n_drop].tolist())
    return drops


def _global_drops(groups, scores, sparsity, round_to) -> dict[int, list[int]]:
    """Rank channels of all groups together (scores normalised by each group's mean)."""
    pooled = [(float(s) / (float(scores[g.id].mean()) + 1e-12), g.id, i)
              for g in groups for i, s in enumerate(scores[g.id])]
    pooled.sort()
    budget = math.floor(sparsity * sum(g.size for g in groups))
    n_drop = {g.id: 0 for g in groups}
    size = {g.id: g.size for g in groups}
    for _, gid, _ in pooled:
        if budget == 0:
            break
        if n_drop[gid] < size[gid] - 1:
            n_drop[gid] += 1
            budget -= 1
    drops = {}
    for g in groups:
        keep = min(g.size, math.ceil((g.size - n_drop[g.id]) / round_to) * round_to)
        drops[g.id] = sorted(torch.argsort(scores[g.id])[: g.size - keep].tolist())
    return drops


def survivors(group: Group, scores: torch.Tensor, plan: Plan) -> dict:
    """Which units of ``group`` the plan keeps, with every unit's importance score."""
    first = next(m for m in group.members if m.role == "out")
    removed = set(plan.cuts.get(first.tensor, {}).get(first.dim, []))
    kept = [c for c in range(group.size) if first.indices([c])[0] not in removed]
    return {"kind": group.kind, "size": group.size, "kept": kept, "scores": [round(float(v), 6) for v in scores]}


def plan_from_drops(groups: list[Group], drops: dict[int, list[int]]) -> Plan:
    """Turn channels removed per group into tensor cuts for every member."""
    plan = Plan()
    for g in groups:
        if drops.get(g.id):
            for m in g.members:
                plan.add_cut(m.tensor, m.dim, m.indices(drops[g.id]))
    return plan


def plan_for_sparsity(groups, scores, method: Structured, sparsity: float) -> Plan:
    if method.scope == "global":
        return plan_from_drops(groups, _global_drops(groups, scores, sparsity, method.round_to))
    return plan_from_drops(groups, _layer_drops(groups, scores, sparsity, method.round_to, method.ratios))


def measured_latency(model: nn.Module, plan: Plan, inputs: Inputs, target: Latency) -> float:
    """onnxruntime latency (ms) of ``model`` after ``plan``, on ``target.batch_size`` copies of the example."""
    from .latency import ort_latency_ms
    from .onnx_export import onnx_of

    pruned = copy.deepcopy(model)
    apply_cuts(pruned, plan)
    sync_attention(pruned)
    batch = tuple(t.expand(target.batch_size, *t.shape[1:]).contiguous() for t in inputs.args)
    with tempfile.TemporaryDirectory(prefix="secateur-lat-") as tmp:
        return ort_latency_ms(onnx_of(pruned, inputs.args, tmp), batch, runs=target.runs)


def plan_for_latency(shadow: Shadow, groups, scores, method: Structured) -> Plan:
    """Bisect a uniform sparsity on *measured* onnxruntime latency until it fits ``method.target.ms``."""
    target = method.target
    ms = lambda s: measured_latency(shadow.model, plan_for_sparsity(groups, scores, method, s),  # noqa: E731
                                    shadow.inputs, target)
    hi = 0.95
    if ms(hi) > target.ms:
        raise PruningError(f"a {target.ms} ms budget is out of reach: {ms(hi):.2f} ms measured with 95% of "
                           "every group removed; raise the budget or prune more unit kinds")
    lo = 0.0
    for _ in range(7):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if ms(mid) <= target.ms else (mid, hi)
    return plan_for_sparsity(groups, scores, method, hi)


def plan_for_target(shadow: Shadow, groups, scores, method: Structured) -> Plan:
    """Bisect the sparsity until the predicted MACs (or params) fraction meets ``method.target``."""
    target = method.target
    if isinstance(target, Latency):
        return plan_for_latency(shadow, groups, scores, method)
    index = 1 if isinstance(target, Macs) else 0
    assert isinstance(target, Macs | Params)
    dense = shadow.run(Plan())[index]
    frac = lambda s: shadow.run(plan_for_sparsity(groups, scores, method, s))[index] / dense  # noqa: E731
    lo, hi = 0.0, 0.999
    if frac(hi) > target.fraction:
        raise PruningError(
            f"target {target} is below what the prunable groups allow (at most "
            f"{frac(hi):.3f} of dense); raise the target or pass fewer ignore= patterns"
        )
    if frac(lo) <= target.fraction:
        return Plan()
    for _ in range(24):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if frac(mid) <= target.fraction else (mid, hi)
    return plan_for_sparsity(groups, scores, method, hi)
