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

from .criteria import get_criterion
from .depth import block_stacks, choose_blocks
from .errors import PruningError
from .inputs import Inputs, as_batches
from .llm.engine import run_oneshot
from .loss import LossFn
from .methods import Method, OneShot, SemiStructured, Structured, Unstructured
from .plan import Plan, apply
from .planner import Planner
from .results import Outcome
from .statistics import collect_statistics
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


def _blocks(model: nn.Module, method: Structured, inputs: Inputs) -> list[str]:
    """Whole blocks to remove when ``units`` asks for them (by block influence)."""
    if not block_stacks(model):
        raise PruningError("units=('blocks',) needs stacks of identical blocks (an nn.ModuleList); none found")
    if not inputs:
        raise PruningError("removing blocks needs example_inputs=... to measure each block's influence")
    blocks = choose_blocks(model, inputs, method.sparsity)
    if not blocks:
        raise PruningError(f"sparsity={method.sparsity} removes no block: the deepest stack has "
                           f"{max(len(s) for s in block_stacks(model).values())} blocks")
    return blocks


def run_structured(model: nn.Module, method: Structured, request: Request) -> Outcome:
    """Blocks first (if asked), then a planner session on the shorter model for the width units."""
    blocks = _blocks(model, method, request.inputs) if "blocks" in (method.units or ()) else []
    apply(model, Plan(blocks=blocks), remember=False)
    if blocks and not method.width_units:
        return Outcome(Plan(blocks=blocks), groups=blocks)
    planner = request.planner or Planner(model, replace(method, units=method.width_units), request.inputs,
                                         request.calibration, request.loss_fn, request.progress)
    if planner.model is not model:
        raise PruningError("the planner= session was made on another model; make one with Planner(model, ...)")
    plan = planner.plan(method.sparsity, method.ratios, method.target)
    predicted, units = planner.predict(plan), planner.units(plan)
    apply(model, plan, remember=False)
    return Outcome(Plan(cuts=plan.cuts, blocks=blocks), groups=blocks + [g.describe() for g in planner.groups],
                   skipped=planner.skipped, units=units, predicted=predicted)


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
