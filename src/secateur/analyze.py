"""``secateur.analyze``: a pre-flight report of what structured pruning can and cannot touch, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn

from .graph import Group, capture
from .inputs import as_inputs
from .methods import Structured
from .structured import Shadow, _ignored, runnable_groups
from .transaction import eval_mode


@dataclass
class GroupReport:
    """One coupled group: its unit kind, size, members, and why it is skipped (None if prunable)."""

    id: int
    kind: str
    size: int
    members: str
    skipped: str | None = None


@dataclass
class Analysis:
    """What ``analyze`` found. ``skipped_modules`` maps layers whose outputs stay to the reason."""

    groups: list[GroupReport]
    unknown_ops: list[str] = field(default_factory=list)
    skipped_modules: dict[str, str] = field(default_factory=dict)

    @property
    def prunable(self) -> list[GroupReport]:
        return [g for g in self.groups if g.skipped is None]

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        kinds: dict[str, int] = {}
        for g in self.prunable:
            kinds[g.kind] = kinds.get(g.kind, 0) + 1
        lines = [f"{len(self.prunable)} prunable groups of {len(self.groups)} "
                 f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items())) or 'none'})", "",
                 "| group | unit | size | members | skipped because |", "|---|---|---|---|---|"]
        lines += [f"| {g.id} | {g.kind} | {g.size} | {g.members} | {g.skipped or ''} |" for g in self.groups]
        if self.unknown_ops:
            lines += ["", "Ops without a coupling rule (their channels are kept):"]
            lines += [f"- {o}" for o in self.unknown_ops]
        if self.skipped_modules:
            lines += ["", "Layers whose outputs are kept:", *(f"- `{m}`: {r}" for m, r in self.skipped_modules.items())]
        return "\n".join(lines) + "\n"


def _skip_reason(group: Group, method: Structured, runnable: set[int], reasons: dict[int, str]) -> str | None:
    if not group.prunable:
        return group.blocked[0] if group.blocked else "a single channel, or no layer produces it"
    if _ignored(group, method.ignore):
        return "matches ignore="
    if method.units is not None and group.kind not in method.units:
        return f"unit {group.kind!r} not in units="
    if group.id not in runnable:
        return reasons.get(group.id, "not runnable")
    return None


def analyze(model: nn.Module, example_inputs: object, method: Structured | None = None) -> Analysis:
    """Report the coupled groups of ``model``, which ``method`` would prune, and why others are skipped.

    >>> import torch
    >>> a = analyze(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), torch.randn(1, 4))
    >>> [(g.members, g.skipped) for g in a.groups]
    [('0.out => 2.in', None), ('2.out', 'tied to a model output')]
    """
    method = method or Structured(sparsity=0.5)
    inputs = as_inputs(example_inputs)
    with eval_mode(model):
        graph = capture(model, inputs.args, inputs.kwargs)
        candidates = [g for g in graph.prunable if not _ignored(g, method.ignore)
                      and (method.units is None or g.kind in method.units)]
        ok, reasons = runnable_groups(Shadow(model, inputs, inputs.output_shapes(model)), candidates)
    runnable = {g.id for g in ok}
    reports = [GroupReport(g.id, g.kind, g.size, g.describe(), _skip_reason(g, method, runnable, reasons))
               for g in graph.groups]
    skipped = {}
    for g, r in zip(graph.groups, reports, strict=True):
        for m in g.members:
            if m.role == "out" and r.skipped is not None:
                skipped.setdefault(m.tensor.rpartition(".")[0], r.skipped)
    return Analysis(reports, graph.unknown_ops, skipped)
