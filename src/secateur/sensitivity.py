"""Sensitivity analysis (quality against pruning ratio, one group or layer at a time) and allocation
of per-group ratios that meet a target with the least predicted quality loss."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from .counting import count_macs, count_params
from .errors import PruningError
from .graph import capture
from .inputs import Inputs, as_inputs
from .methods import Latency, Macs, Params, Structured, Unstructured
from .progress import progress_bar
from .structured import group_key, selectable_groups
from .transaction import eval_mode
from .unstructured import prunable_layers

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

    def plot(self, path: str | Path) -> Path:
        """Quality against ratio, one line per group."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

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
    from torch.utils import _pytree as pytree

    def first(m: nn.Module) -> torch.Tensor:
        with torch.no_grad(), eval_mode(m):
            return next(t for t in pytree.tree_leaves(inputs.call(m)) if isinstance(t, torch.Tensor)).float()

    dense = first(model)
    return lambda m: float(1 - (first(m) - dense).norm() / dense.norm().clamp_min(1e-12))


def _variant(method: Structured | Unstructured, key: str, ratio: float, layers: list[str]):
    if isinstance(method, Structured):
        return replace(method, sparsity=0.0, target=None, ratios={key: ratio})
    return replace(method, sparsity=ratio, ignore=tuple(n for n in layers if n != key))


def sensitivity(model: nn.Module, method: Structured | Unstructured, evaluate: Evaluate | None = None,
                example_inputs: object = None, ratios: tuple[float, ...] = (0.25, 0.5, 0.75),
                progress: bool = True, **prune_kwargs) -> Sensitivity:
    """Prune each group (``Structured``) or layer (``Unstructured``) alone at each ratio, on copies, and
    score it with ``evaluate(model) -> float`` (default: :func:`output_fidelity`)."""
    from .prune import prune

    inputs = as_inputs(example_inputs)
    evaluate = evaluate or output_fidelity(model, inputs)
    if isinstance(method, Structured):
        graph = capture(model, inputs.args, inputs.kwargs)
        keys = {group_key(g): g.kind for g in selectable_groups(graph, method)}
    else:
        keys = dict.fromkeys(prunable_layers(model, method.ignore), "weights")
    layers = list(keys)
    result = Sensitivity(evaluate(model), count_macs(model, inputs) if inputs else 0, count_params(model))
    for key, kind in progress_bar(list(keys.items()), "sensitivity", enabled=progress):
        curve = Curve(key, kind, [0.0], [result.dense_quality], [result.dense_macs], [result.dense_params])
        for r in ratios:
            pruned = copy.deepcopy(model)
            prune(pruned, _variant(method, key, r, layers), example_inputs=inputs, **prune_kwargs)
            curve.ratios.append(r)
            curve.quality.append(evaluate(pruned))
            curve.macs.append(count_macs(pruned, inputs) if inputs else 0)
            curve.params.append(count_params(pruned))
        result.curves.append(curve)
    return result


def _cost(model, method, ratios, inputs, target) -> float:
    """The target's measure (fraction of dense MACs or params, or latency in ms) after ``ratios``."""
    from .prune import prune
    from .structured import measured_latency

    if isinstance(target, Latency):
        return measured_latency(model, _plan_of(model, method, ratios, inputs), inputs, target)
    pruned = copy.deepcopy(model)
    prune(pruned, replace(method, sparsity=0.0, target=None, ratios=dict(ratios)), example_inputs=inputs)
    if isinstance(target, Macs):
        return count_macs(pruned, inputs) / count_macs(model, inputs)
    return count_params(pruned) / count_params(model)


def _plan_of(model, method, ratios, inputs):
    from .prune import prune

    pruned = copy.deepcopy(model)
    return prune(pruned, replace(method, sparsity=0.0, target=None, ratios=dict(ratios)), example_inputs=inputs).plan


def allocate(model: nn.Module, curves: Sensitivity, target: Macs | Params | Latency, example_inputs: object,
             method: Structured | None = None) -> dict[str, float]:
    """Per-group ratios that meet ``target`` with the least predicted quality loss.

    Greedy: repeatedly move the group whose next ratio on its curve loses the least quality per MAC
    (or parameter) saved, and check the real cost (counted, or measured in onnxruntime for a
    :class:`Latency` budget) until the target is met. Use the result as ``Structured(ratios=...)``.
    """
    method = method or Structured(sparsity=0.0)
    inputs = as_inputs(example_inputs)
    goal = target.ms if isinstance(target, Latency) else target.fraction
    position = {c.key: 0 for c in curves.curves}
    ratios: dict[str, float] = {}
    measure = (lambda c, i: c.params[i]) if isinstance(target, Params) else (lambda c, i: c.macs[i])  # noqa: E731
    while _cost(model, method, ratios, inputs, target) > goal:
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
