"""How each method is carried out: a registry of handlers keyed by method type.

A handler takes the model, the method and the normalised request, changes the model (through
``secateur.apply``) and returns an :class:`~secateur.results.Outcome`; ``prune`` runs it inside a
transaction. Lookup follows the method's class hierarchy, so every ``OneShot`` subclass runs on the
layer-by-layer engine without registering anything; ``register_handler`` adds handlers for new kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import nn

from .compensation import add_shifts
from .criteria import get_criterion
from .depth import block_stacks, block_statistics, blocks_by_count, blocks_by_fraction, removable_blocks
from .errors import PruningError
from .inputs import Inputs, as_batches
from .llm.engine import run_oneshot
from .loss import LossFn
from .methods import Method, OneShot, SemiStructured, Structured, Unstructured
from .plan import Plan, apply
from .planner import Planner, default_criterion
from .results import Outcome
from .statistics import collect_statistics
from .structured import Shadow, kept_fraction
from .unstructured import semistructured_masks, unstructured_masks


@dataclass
class Request:
    """One ``prune`` call's other arguments, normalised."""

    inputs: Inputs
    calibration: object
    loss_fn: LossFn
    progress: bool = True
    planner: Planner | None = None


Handler = Callable[[nn.Module, Method, Request], Outcome]


def plan_blocks(model: nn.Module, method: Structured, inputs: Inputs, calibration: object = None,
                progress: bool = False) -> list[str]:
    """Whole blocks to remove when ``units`` asks for them: the criterion chooses from block statistics
    streamed over the calibration batches (or the example inputs), a fraction of each stack or, for a
    target, the fewest blocks whose removal reaches it."""
    if not block_stacks(model):
        raise PruningError("units=('blocks',) needs stacks of identical blocks (an nn.ModuleList); none found")
    batches = [b.inputs for b in as_batches(calibration)] or ([inputs] if inputs else [])
    if not batches:
        raise PruningError("removing blocks needs calibration=... or example_inputs=... to measure the blocks")
    criterion = get_criterion(method.criterion or default_criterion(model, calibration))
    stats = block_statistics(model, batches, progress)
    if method.target is None:
        blocks = blocks_by_fraction(criterion, stats, method.sparsity)
        if not blocks:
            raise PruningError(f"sparsity={method.sparsity} removes no block: the deepest stack has "
                               f"{max(s.size for s in stats.values())} blocks")
        return blocks
    return _blocks_for_target(model, method, inputs, lambda n: blocks_by_count(criterion, stats, n),
                              removable_blocks(stats))


def _blocks_for_target(model: nn.Module, method: Structured, inputs: Inputs, choose, most: int) -> list[str]:
    """The fewest blocks (bisection on the count) whose removal brings params / MACs to the target."""
    if not inputs:
        raise PruningError("a target needs example_inputs=... to count the pruned model's params and MACs")
    shadow = Shadow(model, inputs, inputs.output_shapes(model))  # counts on copies; no graph capture for blocks
    dense = shadow.run(Plan())
    fits = lambda n: kept_fraction(shadow, dense, Plan(blocks=choose(n)), method.target) <= method.target.fraction  # noqa: E731
    if not fits(most):
        raise PruningError(f"target {method.target} is out of reach with blocks alone: removing {most} blocks "
                           "keeps more; relax the target or add width units in a second prune")
    lo, hi = 0, most
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return choose(hi)


def run_structured(model: nn.Module, method: Structured, request: Request) -> Outcome:
    """Blocks first (if asked), then a planner session on the shorter model for the width units."""
    blocks = plan_blocks(model, method, request.inputs, request.calibration, request.progress) \
        if "blocks" in (method.units or ()) else []
    apply(model, Plan(blocks=blocks), remember=False)
    if blocks and not method.width_units:
        return Outcome(Plan(blocks=blocks), groups=blocks)
    planner = request.planner or Planner(model, replace(method, units=method.width_units), request.inputs,
                                         request.calibration, request.loss_fn, request.progress)
    if planner.model is not model:
        raise PruningError("the planner= session was made on another model; make one with Planner(model, ...)")
    plan, shifts, skipped = planner.complete(planner.plan(method.sparsity, method.ratios,
                                                          None if blocks else method.target))
    predicted, units = planner.predict(plan), planner.units(plan)
    apply(model, plan, remember=False)
    add_shifts(model, plan, shifts)
    return Outcome(Plan(cuts=plan.cuts, blocks=blocks, biases=plan.biases, replacements=plan.replacements),
                   groups=blocks + [g.describe() for g in planner.groups if planner.reason(g) is None],
                   skipped={**planner.skipped, **skipped},
                   units=units, predicted=predicted)


def run_masks(model: nn.Module, method: Unstructured | SemiStructured, request: Request) -> Outcome:
    """Unstructured or N:M keep-masks; layers N:M cannot cover are listed as skipped."""
    stats = collect_statistics(model, get_criterion(method.criterion), as_batches(request.calibration),
                               request.loss_fn, request.progress)
    if isinstance(method, SemiStructured):
        masks, skipped = semistructured_masks(model, method, stats)
    else:
        masks, skipped = unstructured_masks(model, method, stats), {}
    plan = Plan(masks=masks)
    apply(model, plan, remember=False)
    return Outcome(plan, groups=[n.removesuffix(".weight") for n in masks], skipped=skipped)


def run_oneshot_method(model: nn.Module, method: OneShot, request: Request) -> Outcome:
    return run_oneshot(model, method, request.calibration, request.progress)


BUILTIN: dict[type, Handler] = {Structured: run_structured, Unstructured: run_masks, SemiStructured: run_masks,
                                OneShot: run_oneshot_method}
_USER: dict[type, Handler] = {}


def register_handler(method_type: type[Method], handler: Handler) -> None:
    """Carry out methods of ``method_type`` (and its subclasses) with ``handler``; overrides built-ins."""
    _USER[method_type] = handler


def handler_for(method: Method) -> Handler:
    for cls in type(method).__mro__:
        for table in (_USER, BUILTIN):
            if cls in table:
                return table[cls]
    raise PruningError(f"no handler for {type(method).__name__}; register one with secateur.register_handler")
