"""``secateur.analyze``: a pre-flight report of what structured pruning can and cannot touch, and why;
with a method, also the plan it would make (nothing is changed)."""

from __future__ import annotations

import copy
import textwrap
from dataclasses import asdict, dataclass, field, replace

from torch import nn

from .errors import InvalidParameterError
from .handlers import plan_blocks
from .inputs import as_inputs
from .methods import Structured
from .plan import Plan, apply
from .planner import Planner
from .results import UnitReport
from .structured import group_key

_REPLACED = "planned as secateur's equivalent module (its sizes prune; a plan that cuts it swaps it): "


@dataclass
class GroupReport:
    """One coupled group: its key, unit kind, size, members, and why it is skipped (None if prunable)."""

    id: int
    key: str
    kind: str
    size: int
    members: str
    skipped: str | None = None


@dataclass
class Analysis:
    """What ``analyze`` found. ``skipped_modules`` maps layers whose outputs stay (and modules kept whole) to
    the reason; ``replaced`` lists the modules planned on as an equivalent module whose sizes prune
    (``replacement.py``: ``nn.MultiheadAttention``); ``plan`` / ``units`` / ``predicted`` show what the method
    would do (when it can plan)."""

    groups: list[GroupReport]
    unknown_ops: list[str] = field(default_factory=list)
    skipped_modules: dict[str, str] = field(default_factory=dict)
    replaced: list[str] = field(default_factory=list)
    plan: Plan | None = None
    units: dict[str, UnitReport] = field(default_factory=dict)
    predicted: tuple[int, int] | None = None
    dense: tuple[int, int] | None = None

    @property
    def prunable(self) -> list[GroupReport]:
        return [g for g in self.groups if g.skipped is None]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["plan"] = self.plan.to_dict() if self.plan else None
        return data

    def _summary(self) -> str:
        kinds: dict[str, int] = {}
        for g in self.prunable:
            kinds[g.kind] = kinds.get(g.kind, 0) + 1
        found = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
        return f"{len(self.prunable)} prunable groups of {len(self.groups)} ({found})"

    def to_text(self, width: int = 80) -> str:
        """For a terminal: one wrapped entry per group, at most ``width`` wide (files get ``to_markdown``)."""
        lines = [self._summary(), ""]
        for g in self.groups:
            head = f"#{g.id} {g.kind} x{g.size} key={g.key}"
            lines += textwrap.wrap(f"{head}: {g.members}", width, subsequent_indent="    ", break_on_hyphens=False)
            if g.skipped:
                lines += textwrap.wrap(f"skipped: {g.skipped}", width, initial_indent="    ", subsequent_indent="    ")
        lines += textwrap.wrap("ops without a coupling rule: " + "; ".join(self.unknown_ops), width) if \
            self.unknown_ops else []
        lines += textwrap.wrap(_REPLACED + ", ".join(self.replaced), width) if self.replaced else []
        if self.plan is not None:
            lines += ["", "plan (nothing applied):", *(f"  remove block {b}" for b in self.plan.blocks)]
            lines += [f"  {k}: keep {len(u.kept)} of {u.size} {u.kind}"[:width] for k, u in self.units.items()]
            if self.predicted and self.dense:
                lines.append(f"  params {self.dense[0]:,} -> {self.predicted[0]:,}, MACs {self.dense[1]:,} -> "
                             f"{self.predicted[1]:,}")
        return "\n".join(lines) + "\n"

    def to_markdown(self) -> str:
        lines = [self._summary(), "",
                 "| group | key | unit | size | members | skipped because |", "|---|---|---|---|---|---|"]
        lines += [f"| {g.id} | {g.key} | {g.kind} | {g.size} | {g.members} | {g.skipped or ''} |" for g in self.groups]
        if self.unknown_ops:
            lines += ["", "Ops without a coupling rule (their channels are kept):"]
            lines += [f"- {o}" for o in self.unknown_ops]
        if self.replaced:
            lines += ["", _REPLACED + ", ".join(f"`{m}`" for m in self.replaced)]
        if self.skipped_modules:
            lines += ["", "Layers whose outputs are kept:", *(f"- `{m}`: {r}" for m, r in self.skipped_modules.items())]
        if self.plan is not None:
            lines += ["", "Plan (nothing applied):", *(f"- remove block `{b}`" for b in self.plan.blocks)]
            lines += [f"- `{k}`: keep {len(u.kept)} of {u.size} {u.kind}" for k, u in self.units.items()]
            if self.predicted and self.dense:
                lines.append(f"- params {self.dense[0]:,} -> {self.predicted[0]:,}, MACs {self.dense[1]:,} -> "
                             f"{self.predicted[1]:,}")
        return "\n".join(lines) + "\n"


def analyze(model: nn.Module, example_inputs: object, method: Structured | None = None,
            calibration: object = None) -> Analysis:
    """Report the coupled groups of ``model``, which ``method`` would prune and why others are skipped,
    and (with a method) the plan it would make: units kept per group, predicted params and MACs.
    The model is not changed.

    >>> import torch
    >>> a = analyze(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(1, 4))
    >>> [(g.members, g.skipped) for g in a.groups]
    [('0.out => 2.in', None), ('2.out', 'tied to a model output')]
    """
    if method is not None and not isinstance(method, Structured):
        raise InvalidParameterError(f"analyze shows the coupled groups structured pruning would cut; "
                                    f"{type(method).__name__} masks weights instead (prune with it directly, or "
                                    "analyze with the structured method)")
    inputs = as_inputs(example_inputs)
    chosen = method or Structured(sparsity=0.5)
    blocks = plan_blocks(model, chosen, inputs, calibration) if "blocks" in (chosen.units or ()) else []
    subject = apply(copy.deepcopy(model), Plan(blocks=blocks), remember=False) if blocks else model
    width = replace(chosen, units=chosen.width_units or None,  # blocks only: still list every group
                    criterion=chosen.criterion if chosen.width_units != () else None)
    planner = Planner(subject, width, inputs, calibration)
    reports = [GroupReport(g.id, group_key(g), g.kind, g.size, g.describe(), planner.reason(g))
               for g in planner.graph.groups]
    skipped: dict[str, str] = {}
    for g, r in zip(planner.graph.groups, reports, strict=True):
        for m in g.members:
            if m.role == "out" and r.skipped is not None:
                skipped.setdefault(m.tensor.rpartition(".")[0], r.skipped)
    analysis = Analysis(reports, planner.graph.unknown_ops, {**skipped, **planner.kept_whole}, planner.replacements)
    if method is not None:
        plan = planner.plan(chosen.sparsity, chosen.ratios, None if blocks else chosen.target) \
            if chosen.width_units != () else Plan()
        analysis.plan = Plan(cuts=plan.cuts, blocks=blocks, replacements=plan.replacements)
        analysis.units = planner.units(plan) if plan.cuts else {}
        analysis.dense, analysis.predicted = planner.predict(Plan()), planner.predict(plan)
    return analysis
