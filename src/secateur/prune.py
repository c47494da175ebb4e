"""``secateur.prune``: one verb, a method object that says what to remove, applied in place."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from .adapters import sync_attention, update_config
from .counting import count_nonzero_params, count_params, macs_and_shapes
from .depth import block_stacks, choose_blocks, remove_blocks
from .errors import PruningError
from .graph import capture
from .inputs import Inputs, as_inputs
from .llm.layerwise import prune_layerwise
from .llm.methods import Magnitude, SparseGPT, Wanda
from .masks import apply_mask
from .methods import SemiStructured, Structured, Unstructured
from .plan import Plan, apply_cuts
from .statistics import Stats, collect_statistics
from .structured import (
    Shadow,
    group_key,
    group_scores,
    plan_for_sparsity,
    plan_for_target,
    runnable_groups,
    selectable_groups,
    survivors,
)
from .transaction import atomic, eval_mode
from .unstructured import semistructured_masks, unstructured_masks


@dataclass
class PruneResult:
    """What ``prune`` did: the plan, and the model's counts before and after.

    ``units`` (structured pruning) maps each group (:func:`group_key`) to its unit kind, size, the
    importance score of every unit and the indices kept: what survived and why.

    ``predicted`` holds the (params, MACs) the plan promised, computed on a shape-only copy before
    the real surgery; after a structured prune they equal ``params_after`` / ``macs_after``.
    """

    method: Structured | Unstructured | SemiStructured
    plan: Plan
    params_before: int
    params_after: int
    nonzero_before: int
    nonzero_after: int
    macs_before: int | None = None
    macs_after: int | None = None
    predicted: tuple[int, int] | None = None
    groups: list[str] = field(default_factory=list)
    units: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("method", "plan")}
        return {"method": {"name": type(self.method).__name__, **asdict(self.method)},
                "plan": self.plan.to_dict(), **d}

    def summary(self) -> str:
        macs = f", MACs {self.macs_before:,} -> {self.macs_after:,}" if self.macs_before else ""
        return (f"{type(self.method).__name__}: params {self.params_before:,} -> {self.params_after:,}, "
                f"non-zero {self.nonzero_before:,} -> {self.nonzero_after:,}{macs}")


def _prune_structured(model: nn.Module, method: Structured, inputs: Inputs, shapes: list, stats: Stats
                      ) -> tuple[Plan, list[str], tuple[int, int], dict]:
    if not inputs:
        raise PruningError("Structured pruning needs example_inputs=... to trace the model's couplings")
    blocks = _prune_blocks(model, method, inputs)
    if blocks and set(method.units) == {"blocks"}:
        return Plan(blocks=blocks), blocks, Shadow(model, inputs, shapes).run(Plan()), {}
    if blocks:
        method = replace(method, units=tuple(u for u in method.units if u != "blocks"))
    plan, groups, predicted, units = _prune_width(model, method, inputs, shapes, stats)
    plan.blocks = blocks
    return plan, blocks + groups, predicted, units


def _prune_blocks(model: nn.Module, method: Structured, inputs: Inputs) -> list[str]:
    """Remove whole blocks first when ``units`` asks for them (width pruning then sees the shorter model)."""
    if not method.units or "blocks" not in method.units:
        return []
    if method.sparsity is None:
        raise PruningError("blocks are removed with sparsity= (a fraction of each stack), not with target=")
    if not block_stacks(model):
        raise PruningError("units=('blocks',) needs stacks of identical blocks (an nn.ModuleList); none found")
    blocks = choose_blocks(model, inputs, method.sparsity)
    if not blocks:
        raise PruningError(f"sparsity={method.sparsity} removes no block: the deepest stack has "
                           f"{max(len(s) for s in block_stacks(model).values())} blocks")
    remove_blocks(model, blocks)
    return blocks


def _prune_width(model: nn.Module, method: Structured, inputs: Inputs, shapes: list, stats: Stats
                 ) -> tuple[Plan, list[str], tuple[int, int], dict]:
    graph = capture(model, inputs.args, inputs.kwargs)
    shadow = Shadow(model, inputs, shapes)
    groups, _ = runnable_groups(shadow, selectable_groups(graph, method))
    if not groups:
        kinds = sorted({g.kind for g in graph.prunable})
        raise PruningError(f"no prunable groups for units={method.units} (this model has: {kinds or 'none'}); "
                           "run secateur.analyze(model, example_inputs) to see what blocks the others")
    scores = {g.id: group_scores(model, g, method.criterion, stats) for g in groups}
    if method.sparsity is not None or method.ratios:
        plan = plan_for_sparsity(groups, scores, method, method.sparsity or 0.0)
        if plan.is_empty() and (method.sparsity or 0) > 0:
            largest = max(g.size for g in groups)
            raise PruningError(f"sparsity={method.sparsity} removes nothing: the largest selected group has "
                               f"{largest} units, so at least {1 / largest:.3g} is needed (or round_to is too big)")
    else:
        plan = plan_for_target(shadow, groups, scores, method)
    units = {group_key(g): survivors(g, scores[g.id], plan) for g in groups}
    return plan, [g.describe() for g in groups], shadow.run(plan), units


def _forward_after(model: nn.Module, inputs: Inputs, shapes: list) -> int:
    """MACs of the pruned model, which must still run and give outputs of the same shapes (or it rolls back)."""
    try:
        macs, after = macs_and_shapes(model, inputs)
    except Exception as exc:
        raise PruningError(f"the pruned model no longer runs ({type(exc).__name__}: {exc}); the model was "
                           "restored. A module hard-codes a size secateur does not know: pass ignore=[...] "
                           "for it or register a rule") from exc
    if after != shapes:
        raise PruningError(f"pruning changed the output shapes {shapes} -> {after}; the model was restored")
    return macs


def _prune_masks(model: nn.Module, method: Unstructured | SemiStructured, stats: Stats) -> tuple[Plan, list[str]]:
    """Unstructured or N:M masks; layers N:M cannot cover are listed (never skipped silently)."""
    if isinstance(method, SemiStructured):
        masks, skipped = semistructured_masks(model, method, stats)
    else:
        masks, skipped = unstructured_masks(model, method, stats), {}
    if not masks:
        raise PruningError(f"no Conv or Linear layers to prune (check ignore= patterns); skipped: {skipped}")
    plan = Plan()
    for name, mask in masks.items():
        apply_mask(model.get_submodule(name), mask)
        plan.masks[f"{name}.weight"] = 1.0 - float(mask.float().mean())
    return plan, [f"{name}: skipped, {why}" for name, why in skipped.items()]


def _prune_layerwise(model: nn.Module, method: Magnitude | Wanda | SparseGPT, calibration) -> PruneResult:
    """One-shot LLM pruning, block by block (see ``secateur.llm``)."""
    if calibration is None and not isinstance(method, Magnitude):
        raise PruningError(f"{type(method).__name__} needs calibration= token ids shaped (sequences, length)")
    if calibration is None:
        calibration = torch.zeros(1, 1, dtype=torch.long)  # magnitude reads weights only
    before = (count_params(model), count_nonzero_params(model))
    report = prune_layerwise(model, method, torch.as_tensor(calibration))
    plan = Plan(masks=dict(report.sparsity))
    return PruneResult(method=method, plan=plan, params_before=before[0], params_after=count_params(model),
                       nonzero_before=before[1], nonzero_after=count_nonzero_params(model),
                       groups=[f"{report.seconds:.1f} s"])


def prune(
    model: nn.Module,
    method: Structured | Unstructured | SemiStructured | Magnitude | Wanda | SparseGPT,
    example_inputs: torch.Tensor | tuple | dict | None = None,
    calibration: Iterable | None = None,
    loss_fn: Callable = F.cross_entropy,
) -> PruneResult:
    """Prune ``model`` in place as ``method`` says; on any failure the model is left exactly as it was.

    ``calibration`` (batches of inputs, or ``(inputs, targets)`` for gradient criteria scored with
    ``loss_fn``) is needed by the data-driven criteria: ``taylor``, ``hessian``, ``activation``. For the
    one-shot language-model methods (``Wanda``, ``SparseGPT``, ``Magnitude``) it is a tensor of token
    ids shaped ``(sequences, length)``, and the model is pruned block by block.

    >>> import secateur as sc
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> sc.prune(net, sc.Structured(sparsity=0.5), example_inputs=torch.randn(1, 8)).params_after
    90
    """
    if isinstance(method, Magnitude | Wanda | SparseGPT):
        return _prune_layerwise(model, method, calibration)
    inputs = as_inputs(example_inputs)
    if not isinstance(method, Structured | Unstructured | SemiStructured):
        raise TypeError(f"method must be secateur.Structured, Unstructured or SemiStructured, not "
                        f"{type(method).__name__}")
    stats = collect_statistics(model, method.criterion, calibration, loss_fn)
    with eval_mode(model):
        return _prune(model, method, inputs, stats)


def _prune(model: nn.Module, method: Structured | Unstructured | SemiStructured, inputs: Inputs,
           stats: Stats) -> PruneResult:
    macs, shapes = macs_and_shapes(model, inputs) if inputs else (None, None)
    before = (count_params(model), count_nonzero_params(model), macs)
    groups: list[str] = []
    predicted, units = None, {}
    with atomic(model):
        if isinstance(method, Structured):
            plan, groups, predicted, units = _prune_structured(model, method, inputs, shapes, stats)
            apply_cuts(model, plan)
            sync_attention(model)
        else:
            plan, groups = _prune_masks(model, method, stats)
        macs_after = _forward_after(model, inputs, shapes) if inputs else None
        if isinstance(method, Structured):
            update_config(model)
    if plan.blocks:  # load() replays removals in order, so keep them with the model
        model.__dict__.setdefault("secateur_blocks", []).append(plan.blocks)
    return PruneResult(
        method=method, plan=plan, units=units, params_before=before[0], params_after=count_params(model),
        nonzero_before=before[1], nonzero_after=count_nonzero_params(model), macs_before=before[2],
        macs_after=macs_after, predicted=predicted, groups=groups,
    )
