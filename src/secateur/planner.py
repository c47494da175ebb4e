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

from .compensation import bias_shifts, with_biases
from .criteria import Criterion, GroupWeights, get_criterion
from .errors import InvalidParameterError, PruningError
from .graph import Group, capture
from .inputs import Batch, Inputs, as_batches, as_inputs
from .methods import Latency, Macs, Params, Structured, Target
from .methods.structured import LM_CRITERION
from .plan import Plan, apply
from .progress import phase
from .replacement import candidates, swapped
from .results import UnitReport
from .statistics import collect_statistics
from .structured import (
    Shadow,
    exclusion,
    group_key,
    kept_fraction,
    restricted,
    runnable_groups,
    selectable_groups,
    unit_report,
)
from .transaction import eval_mode
from .widths import Units, global_drops, gqa_layout, layer_drops, plan_from_drops, query_heads, unit_cost


def is_causal_lm(model: nn.Module) -> bool:
    """A Hugging Face model that generates text from its own outputs (``can_generate``, not encoder-decoder)."""
    config = getattr(model, "config", None)
    return bool(getattr(model, "can_generate", lambda: False)()) and not getattr(config, "is_encoder_decoder", False)


def default_criterion(model: nn.Module, calibration: object) -> str:
    """``magnitude``; for a causal language model given calibration data, the data-aware ``LM_CRITERION``
    (magnitude ruins them: SmolLM2's perplexity went 17.5 -> 1,724 at 5% of FFN channels).

    >>> default_criterion(nn.Linear(2, 2), None)
    'magnitude'
    """
    return LM_CRITERION if calibration is not None and is_causal_lm(model) else "magnitude"


def lm_batches(batches: list[Batch]) -> list[Batch]:
    """Token-id batches of a causal LM with ``labels`` added (the model then computes its next-token loss)."""
    out = []
    for b in batches:
        kwargs, ids = b.inputs.kwargs, b.inputs.kwargs.get("input_ids", b.inputs.args[0] if b.inputs.args else None)
        if b.target is not None or "labels" in kwargs or not isinstance(ids, torch.Tensor) or ids.is_floating_point():
            out.append(b)
            continue
        mask = kwargs.get("attention_mask")
        labels = ids if mask is None else ids.masked_fill(mask == 0, -100)
        out.append(Batch(Inputs((), {**kwargs, "input_ids": ids, "labels": labels})))
    return out


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
        self.criterion: Criterion = get_criterion(method.criterion or default_criterion(model, calibration))
        self.batches = as_batches(calibration)
        if self.criterion.needs & {"grad", "grad_sq"} and is_causal_lm(model):
            self.batches = lm_batches(self.batches)
        # modules whose code blocks every cut are swapped on the subject the session plans on (replacement.py)
        self.replacements, self.kept_whole = candidates(model, method.ignore)
        self.subject = swapped(model, self.replacements)
        with eval_mode(model), eval_mode(self.subject), phase("capturing the graph", progress):
            self.shapes = self.inputs.output_shapes(model)
            self.graph = capture(self.subject, self.inputs.args, self.inputs.kwargs, grouping=method.grouping)
            self.shadow = Shadow(self.subject, self.inputs, self.shapes)
            self.groups, self._unrunnable = runnable_groups(self.shadow, selectable_groups(self.graph, method))
        self.stats: dict | None = None
        self._units: list[Units] | None = None
        self._dense: tuple[int, int, int] | None = None
        self._refused: dict[int, str] = {}  # groups the last plan left out: the code refused their planned size

    def reason(self, group: Group) -> str | None:
        """Why ``group`` is not pruned (None when it is a candidate)."""
        if not group.prunable:
            return group.blocked[0] if group.blocked else "a single unit, or no layer produces it"
        return exclusion(group, self.method) or self._unrunnable.get(group.id) or self._refused.get(group.id)

    @property
    def skipped(self) -> dict[str, str]:
        """Every group not pruned, described, with the reason."""
        return {**{g.describe(): r for g in self.graph.groups if (r := self.reason(g)) is not None},
                **self.kept_whole}

    @property
    def keys(self) -> dict[str, Group]:
        """Candidate groups by the key ``ratios=`` and ``sensitivity`` use."""
        return {group_key(g): g for g in self.groups}

    def _query_heads_follow(self) -> bool:
        """Can the model's code run with fewer query heads per key-value group (e.g. Llama's GQA)?"""
        gqa = [Units(g, torch.zeros(query_heads(g).size), heads=gqa_layout(g)[:2]) for g in self.groups
               if gqa_layout(g)]
        if not gqa:
            return False
        first = {u.group.id: [c * u.heads[1] for c in range(u.heads[0])] for u in gqa}  # one query head per group
        return self.shadow.runs(plan_from_drops(gqa, first))

    @property
    def selection(self) -> list[Units]:
        """Every candidate group's units with their scores and costs (computed once, in one calibration pass)."""
        if self._units is None:
            self.stats = collect_statistics(self.subject, self.criterion, self.batches, self.loss_fn, self.progress)
            shapes = {n: p.shape for n, p in self.subject.named_parameters(remove_duplicate=False)}
            split = self._query_heads_follow()
            self._units = []
            with torch.no_grad():
                for g in self.groups:
                    layout = gqa_layout(g) if split else None
                    view = query_heads(g) if layout else g
                    scores = self.criterion.unit_scores(GroupWeights.of(self.subject, view, self.stats)).float()
                    self._units.append(Units(g, scores, unit_cost(view, shapes), layout[:2] if layout else None))
        return self._units

    @property
    def scores(self) -> dict[int, torch.Tensor]:
        """One importance score per unit of each candidate group (query heads under grouped-query attention)."""
        return {u.group.id: u.scores for u in self.selection}

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
        plan = self._within_code_limits(lambda skip: self._plan_for_sparsity(sparsity or 0.0, ratios, skip=skip))
        if plan.is_empty() and (sparsity or 0) > 0:
            largest = max(g.size for g in self.groups)
            raise PruningError(f"sparsity={sparsity} removes nothing: the largest selected group has {largest} "
                               f"units, so at least {1 / largest:.3g} is needed (or round_to is too big)")
        return self.swaps(plan)

    def swaps(self, plan: Plan) -> Plan:
        """``plan`` with the module swaps its cuts and biases need (names inside a swapped module exist only after
        the swap), so it applies to the user's model as well as to the session's subject."""
        names = [*plan.cuts, *plan.biases]
        needed = [r for r in self.replacements if any(n.startswith(r + ".") for n in names)]
        return replace(plan, replacements=[*plan.replacements, *(r for r in needed if r not in plan.replacements)])

    def _check_ratios(self, ratios: dict[str, float]) -> None:
        unknown = sorted(set(ratios) - set(self.keys))
        if unknown:
            raise InvalidParameterError(f"ratios= names {unknown[0]!r}, which is not a prunable group here; valid "
                                        f"keys: {', '.join(self.keys)} (secateur.analyze lists them)")

    def _within_code_limits(self, build: Callable[[frozenset[int]], Plan]) -> Plan:
        """``build(skip)``'s plan, leaving out (``skip``) the groups whose planned size the model's own code refuses
        (it ran with one unit fewer, e.g. a conv that needs a minimum width); each is reported with the reason."""
        self._refused, skip = {}, frozenset()
        plan = build(skip)
        while not plan.is_empty() and not self.shadow.runs(plan):
            refused = {u.group.id for u in self.selection
                       if u.group.id not in skip and not self.shadow.runs(restricted(plan, u.group))}
            if not refused:  # the sizes fail only together: predict() raises with the model's own error
                return plan
            skip |= refused
            self._refused.update(dict.fromkeys(refused, "the model's code cannot run at the size this plan gives it "
                                                        "(a forward pass failed; it ran with one unit fewer)"))
            plan, refused_plan = build(skip), plan
            if plan.is_empty():  # the code refused every group: its own error, else the output shapes changed
                self.shadow.run(refused_plan)
                raise PruningError(f"the model's code refuses every selected group at this plan's sizes: its output "
                                   f"shapes change ({len(skip)} groups left out: {self._refused_names()}); prune "
                                   "fewer units, other units=, or ignore=[...] the layers involved")
        return plan

    def _refused_names(self) -> str:
        """The groups the last plan left out because the code refused their planned size, described."""
        names = [group_key(g) for g in self.groups if g.id in self._refused]
        return ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")

    def _plan_for_sparsity(self, sparsity: float, ratios: dict[str, float] | None = None, costs: bool = False,
                           skip: frozenset[int] = frozenset()) -> Plan:
        m, units = self.method, [u for u in self.selection if u.group.id not in skip]
        if m.scope == "global":
            weighted = units if costs else [replace(u, cost=1.0) for u in units]
            return plan_from_drops(units, global_drops(weighted, sparsity, m.round_to, self.criterion.normalize))
        drops = layer_drops(units, sparsity, m.round_to, ratios, group_key)
        if not costs:  # an explicit fraction, not a target's bisection
            self._check_heads(units, drops, sparsity, ratios or {})
        return plan_from_drops(units, drops)

    def _check_heads(self, units: list[Units], drops: dict[int, list[int]], sparsity: float,
                     ratios: dict[str, float]) -> None:
        """Heads named in ``units=`` must lose something when a fraction is asked of them, or say why not."""
        if "heads" not in (self.method.units or ()):
            return
        for u in units:
            wanted = ratios.get(group_key(u.group), sparsity)
            if u.group.kind == "heads" and wanted > 0 and not drops[u.group.id]:
                layout = (f"{u.size} query heads in {u.heads[0]} key-value groups (each group keeps as many query "
                          "heads as the others)") if u.heads else f"{u.size} heads"
                raise PruningError(f"sparsity={wanted} removes nothing from {group_key(u.group)}'s {layout}: "
                                   f"{wanted} x {u.size} rounds to 0 heads. Ask for a larger fraction of heads, e.g. "
                                   f"ratios={{{group_key(u.group)!r}: ...}} or a target=, or leave heads out of units=")

    def complete(self, plan: Plan) -> tuple[Plan, dict[str, torch.Tensor], dict[str, str]]:
        """``plan`` as it will be applied: with the biases the criterion's compensation adds (``Plan.biases``),
        the shifts to add to them once applied (:func:`~secateur.compensation.add_shifts`), and the layers
        left uncompensated with the reason."""
        if not self.criterion.compensates or plan.is_empty():
            return plan, {}, {}
        full, skipped = with_biases(self.subject, self.groups, plan)
        shifts = bias_shifts(self.subject, self.groups, full, self.stats or {})
        unexpressed = {k.removeprefix("bias compensation of ") for k in skipped}
        return self.swaps(full), {n: v for n, v in shifts.items() if n not in unexpressed}, skipped

    def predict(self, plan: Plan) -> tuple[int, int]:
        """(params, MACs) after ``plan``, counted on a shape-only copy."""
        return self.shadow.run(plan)[:2]

    def units(self, plan: Plan) -> dict[str, UnitReport]:
        """What ``plan`` keeps of every candidate group, with the scores."""
        return {group_key(u.group): unit_report(u.view, u.scores, plan) for u in self.selection}

    def fraction(self, plan: Plan, target: Macs | Params) -> float:
        """What ``plan`` keeps of the dense model, measured as ``target`` counts (MACs, params, or params
        outside the embedding tables with ``Params(embeddings=False)``)."""
        if self._dense is None:
            self._dense = self.shadow.run(Plan())
        return kept_fraction(self.shadow, self._dense, plan, target)

    def _plan_for_target(self, target: Target) -> Plan:
        """Bisect a sparsity (layer scope: every group's fraction; global scope: the fraction of all candidate
        parameters) until the predicted MACs / params fraction (or measured latency) fits."""
        make = lambda s: self._plan_for_sparsity(s, costs=True)  # noqa: E731
        if isinstance(target, Latency):
            measure = lambda s: self.latency_ms(make(s), target)  # noqa: E731
            goal, lo, hi, steps = target.ms, 0.0, 0.95, 7
        else:  # counted with the biases compensation would add
            measure = lambda s: self.fraction(with_biases(self.subject, self.groups, make(s))[0]  # noqa: E731
                                              if self.criterion.compensates else make(s), target)
            goal, lo, hi, steps = target.fraction, 0.0, 0.999, 24
        if measure(hi) > goal:
            raise PruningError(f"target {target} is out of reach: {measure(hi):.3g} with {hi:.1%} of every selected "
                               "group removed; relax the target, or prune more unit kinds / fewer ignore= patterns")
        if measure(lo) <= goal:
            return Plan()
        for _ in range(steps):
            mid = (lo + hi) / 2
            lo, hi = (lo, mid) if measure(mid) <= goal else (mid, hi)
        return self.swaps(make(hi))

    def latency_ms(self, plan: Plan, target: Latency) -> float:
        """onnxruntime latency of the model after ``plan``, on ``target.batch_size`` copies of the example."""
        from .latency import ort_latency_ms
        from .onnx_export import onnx_of

        pruned = apply(copy.deepcopy(self.subject), plan, remember=False)
        batch = self.inputs.repeat_batch(target.batch_size)
        with tempfile.TemporaryDirectory(prefix="secateur-lat-") as tmp:
            return ort_latency_ms(onnx_of(pruned, batch, tmp), batch, runs=target.runs)

    def commit(self, plan: Plan) -> None:
        """After ``plan`` was applied to the model: renumber every candidate group for the smaller model,
        so planning goes on without a new capture (scores are recomputed from the current weights)."""
        self.replacements = [r for r in self.replacements if r not in plan.replacements]
        self.subject = swapped(self.model, self.replacements)
        self.shadow.reset(self.subject)
        self.groups = [g for g in (_shrunk(g, plan.cuts) for g in self.groups) if g.size > 1]
        self._units = self._dense = self.stats = None


def _remap(index: int, removed: list[int]) -> int:
    return index - sum(r < index for r in removed)


def _shrunk(group: Group, cuts: dict[str, dict[int, list[int]]]) -> Group:
    """``group`` after ``cuts``: its removed units gone, the rest renumbered, every member's offset shifted
    (and its factor, where a cut took part of every unit: query heads inside key-value groups)."""
    removed = {id(m): set(cuts.get(m.tensor, {}).get(m.dim, [])) for m in group.members}
    base = min((m for m in group.members if m.role == "out"), key=lambda m: m.factor)
    kept = [c for c in range(group.size) if not set(base.indices([c])) <= removed[id(base)]]
    members = []
    for m in group.members:
        gone = sorted(removed[id(m)])
        inside = sum(p in removed[id(m)] for p in m.indices(kept[:1])) // m.repeat
        offset = _remap(m.offset, gone)
        stride = _remap(m.offset + m.stride, gone) - offset if m.repeat > 1 else m.stride
        members.append(replace(m, offset=offset, stride=stride, factor=m.factor - inside))
    return replace(group, size=len(kept), members=members)
