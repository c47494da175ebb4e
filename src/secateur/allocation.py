"""Sensitivity analysis (quality against pruning ratio, one group or layer at a time) and allocation
of per-group ratios that meet a target with the least predicted quality loss."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .counting import count_macs, count_params
from .criteria import get_criterion
from .deps import require
from .errors import InvalidParameterError, PruningError
from .inputs import Inputs, as_batches, as_inputs, logits_of
from .methods import Latency, Macs, Params, Structured, Unstructured
from .methods.base import check_fraction
from .plan import Plan, apply
from .planner import Planner
from .progress import progress_bar
from .selection import keep_top
from .statistics import collect_statistics
from .transaction import eval_mode
from .unstructured import saliencies, weight_name

Evaluate = Callable[[nn.Module], float]


@dataclass
class Curve:
    """Quality, MACs and params of the model with only ``key`` pruned, at each ratio (0 first)."""

    key: str
    kind: str
    ratios: list[float]
    quality: list[float]
    macs: list[int]
    params: list[int]


@dataclass
class Sensitivity:
    """Curves for every group (structured) or layer (unstructured), and the dense model's figures."""

    dense_quality: float
    dense_macs: int
    dense_params: int
    curves: list[Curve] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        ratios = self.curves[0].ratios[1:] if self.curves else []
        head = ["group", "unit", *(f"quality at {r:.0%}" for r in ratios), "MACs saved at max"]
        lines = [f"dense quality {self.dense_quality:.4f}", "", "| " + " | ".join(head) + " |",
                 "|" + "---|" * len(head)]
        for c in sorted(self.curves, key=lambda c: c.quality[-1], reverse=True):
            saved = 1 - c.macs[-1] / self.dense_macs
            cells = " | ".join(f"{q:.4f}" for q in c.quality[1:])
            lines.append(f"| {c.key} | {c.kind} | {cells} | {saved:.1%} |")
        return "\n".join(lines) + "\n"

    def to_text(self, width: int = 80) -> str:
        """For a terminal: one line per group (key cut to fit), at most ``width`` wide."""
        ratios = self.curves[0].ratios[1:] if self.curves else []
        cells = [f"{r:>6.0%}" for r in ratios] + ["MACs saved"]
        key_width = max(8, width - len(" ".join(cells)) - 12)
        lines = [f"dense quality {self.dense_quality:.4f}; quality with each group pruned alone:",
                 f"{'group':<{key_width}} {'unit':<9} " + " ".join(cells)]
        for c in sorted(self.curves, key=lambda c: c.quality[-1], reverse=True):
            key = c.key if len(c.key) <= key_width else "…" + c.key[-key_width + 1 :]
            quality = " ".join(f"{q:>6.3f}" for q in c.quality[1:])
            lines.append(f"{key:<{key_width}} {c.kind:<9} {quality} {1 - c.macs[-1] / self.dense_macs:>9.1%}"
                         if self.dense_macs else f"{key:<{key_width}} {c.kind:<9} {quality}")
        return "\n".join(line[:width] for line in lines) + "\n"

    def plot(self, path: str | Path) -> Path:
        """Quality against ratio, one line per group."""
        require("matplotlib", "plots").use("Agg")
        plt = require("matplotlib.pyplot", "plots")

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for c in self.curves:
            ax.plot(c.ratios, c.quality, marker="o", label=c.key)
        ax.set_xlabel("fraction of the group removed")
        ax.set_ylabel("quality")
        ax.set_title("sensitivity (one group pruned at a time)")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return Path(path)


def output_fidelity(model: nn.Module, inputs: Inputs) -> Evaluate:
    """A quality measure that needs no labels: ``1 - ||y - y_dense|| / ||y_dense||`` on the example inputs."""

    def first(m: nn.Module) -> torch.Tensor:
        with torch.no_grad(), eval_mode(m):
            return logits_of(inputs.call(m)).float()

    dense = first(model)
    return lambda m: float(1 - (first(m) - dense).norm() / dense.norm().clamp_min(1e-12))


def _measure(model: nn.Module, plan: Plan, inputs: Inputs, evaluate: Evaluate) -> tuple[float, int, int]:
    pruned = apply(copy.deepcopy(model), plan, remember=False)
    return evaluate(pruned), count_macs(pruned, inputs) if inputs else 0, count_params(pruned)


def _trials(model: nn.Module, method: Structured | Unstructured, inputs: Inputs, calibration: object,
            loss_fn: Callable, ratios: tuple[float, ...]) -> dict[tuple[str, str], list[Plan]]:
    """For every group (structured) or layer (unstructured), the plan of each ratio, pruning it alone."""
    if isinstance(method, Structured):
        planner = Planner(model, method, inputs, calibration, loss_fn)
        return {(key, g.kind): [planner.plan(sparsity=0.0, ratios={key: r}) for r in ratios]
                for key, g in planner.keys.items()}
    criterion = get_criterion(method.criterion)
    stats = collect_statistics(model, criterion, as_batches(calibration), loss_fn)
    trials = {}
    for layer, scores in saliencies(model, method, stats).items():
        masks = [keep_top(scores, scores.numel() - int(r * scores.numel())) for r in ratios]
        trials[(layer, "weights")] = [Plan(masks={weight_name(layer): m}) for m in masks]
    return trials


def sensitivity(model: nn.Module, method: Structured | Unstructured, evaluate: Evaluate | None = None,
                example_inputs: object = None, ratios: tuple[float, ...] = (0.25, 0.5, 0.75),
                calibration: object = None, loss_fn: Callable = F.cross_entropy, progress: bool = True) -> Sensitivity:
    """Prune each group (``Structured``) or layer (``Unstructured``) alone at each ratio, on copies, and
    score it with ``evaluate(model) -> float`` (default: :func:`output_fidelity`). The graph is captured
    and units scored once (a :class:`~secateur.planner.Planner` session), then each trial is a copy.

    >>> import secateur as sc
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> s = sc.sensitivity(net, sc.Structured(sparsity=0.0), example_inputs=torch.randn(2, 4), ratios=(0.5,))
    >>> [(c.key, c.params) for c in s.curves]
    [('0', [58, 30])]
    """
    if not isinstance(method, Structured | Unstructured):
        raise InvalidParameterError(f"sensitivity prunes groups (structured) or layers (unstructured) one at a time; "
                                    f"{type(method).__name__} is neither: pass sc.Structured(...) or "
                                    "sc.Unstructured(...)")
    for r in ratios:
        check_fraction("ratio", r)
    inputs = as_inputs(example_inputs)
    evaluate = evaluate or output_fidelity(model, inputs)
    result = Sensitivity(evaluate(model), count_macs(model, inputs) if inputs else 0, count_params(model))
    trials = _trials(model, method, inputs, calibration, loss_fn, tuple(ratios))
    for (key, kind), plans in progress_bar(list(trials.items()), "sensitivity", enabled=progress):
        curve = Curve(key, kind, [0.0], [result.dense_quality], [result.dense_macs], [result.dense_params])
        for r, plan in zip(ratios, plans, strict=True):
            quality, macs, params = _measure(model, plan, inputs, evaluate)
            curve.ratios.append(r)
            curve.quality.append(quality)
            curve.macs.append(macs)
            curve.params.append(params)
        result.curves.append(curve)
    return result


def allocate(model: nn.Module, curves: Sensitivity, target: Macs | Params | Latency, example_inputs: object,
             method: Structured | None = None, calibration: object = None, loss_fn: Callable = F.cross_entropy,
             progress: bool = True) -> dict[str, float]:
    """Per-group ratios that meet ``target`` with the least predicted quality loss.

    Greedy: repeatedly move the group whose next ratio on its curve loses the least quality per MAC
    (or parameter) saved, and check the real cost (counted on a shape-only copy, or measured in
    onnxruntime for a :class:`Latency` budget) until the target is met. Use the result as
    ``Structured(ratios=...)``.
    """
    planner = Planner(model, method or Structured(sparsity=0.0), example_inputs, calibration, loss_fn)
    dense = planner.predict(Plan())
    index = 0 if isinstance(target, Params) else 1

    def cost(ratios: dict[str, float]) -> float:
        plan = planner.plan(sparsity=0.0, ratios=dict(ratios))
        if isinstance(target, Latency):
            return planner.latency_ms(plan, target)
        return planner.predict(plan)[index] / dense[index]

    goal = target.ms if isinstance(target, Latency) else target.fraction
    position = {c.key: 0 for c in curves.curves}
    ratios: dict[str, float] = {}
    measure = (lambda c, i: c.params[i]) if isinstance(target, Params) else (lambda c, i: c.macs[i])  # noqa: E731
    over_budget = iter(lambda: cost(ratios) > goal, False)  # yields True until the target is met
    for _ in progress_bar(over_budget, "allocate", enabled=progress):
        options = []
        for c in curves.curves:
            i = position[c.key]
            if i + 1 < len(c.ratios):
                saved = max(measure(c, i) - measure(c, i + 1), 1)
                options.append(((c.quality[i] - c.quality[i + 1]) / saved, c.key, i + 1, c))
        if not options:
            raise PruningError(f"the target {target} is out of reach with ratios up to "
                               f"{max(curves.curves[0].ratios):.0%} per group; add larger ratios to the curves")
        _, key, i, c = min(options, key=lambda o: o[0])
        position[key] = i
        ratios[key] = c.ratios[i]
    return ratios
