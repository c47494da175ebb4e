"""``secateur.pruning``: one verb, a method object that says what to remove, applied in place.

``prune`` normalises its inputs, looks up the method's handler (``handlers.py``), runs it inside a
transaction that restores the model exactly on any failure, checks the pruned model still runs with
the same output shapes, and returns a typed :class:`~secateur.results.PruneResult`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch.nn.functional as F
from torch import nn

from .counting import count_nonzero_params, count_params, macs_and_shapes
from .errors import InvalidParameterError, PruningError
from .handlers import Request, handler_for
from .inputs import Inputs, as_inputs
from .methods import Method
from .plan import record
from .planner import Planner
from .results import PruneResult
from .transaction import atomic, eval_mode


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


def prune(model: nn.Module, method: Method, example_inputs: object = None, calibration: object = None,
          loss_fn: Callable = F.cross_entropy, progress: bool = True, planner: Planner | None = None) -> PruneResult:
    """Prune ``model`` in place as ``method`` says; on any failure the model is left exactly as it was.

    ``example_inputs`` (a tensor, tuple, dict or DataLoader) are traced for structured pruning and run
    to check the result. ``calibration`` (batches of inputs, ``(inputs, targets)`` for gradient
    criteria scored with ``loss_fn``, or Hugging Face dicts) feeds the data-driven criteria
    (``taylor``, ``hessian``, ``activation``). For one-shot language-model methods (``Wanda``,
    ``SparseGPT``, ``Magnitude``) it is token ids, and the model is pruned block by block.
    ``progress`` shows bars on a terminal. ``planner`` reuses a structured session (:class:`Planner`) made
    on this model, so no new graph capture is needed.

    >>> import torch, secateur as sc
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    >>> sc.prune(net, sc.Structured(sparsity=0.5), example_inputs=torch.randn(1, 8)).params_after
    90
    """
    if not isinstance(method, Method):
        raise InvalidParameterError(f"method must be a secateur method (Structured, Unstructured, SemiStructured, "
                                    f"Magnitude, Wanda, SparseGPT...), not {type(method).__name__}")
    handler = handler_for(method)
    request = Request(as_inputs(example_inputs), calibration, loss_fn, progress, planner)
    start = time.perf_counter()
    with eval_mode(model):
        macs, shapes = macs_and_shapes(model, request.inputs) if request.inputs else (None, None)
        before = (count_params(model), count_nonzero_params(model))
        with atomic(model):
            outcome = handler(model, method, request)
            macs_after = _forward_after(model, request.inputs, shapes) if request.inputs else None
    record(model, outcome.plan)
    return PruneResult(
        method=method, plan=outcome.plan, params_before=before[0], params_after=count_params(model),
        nonzero_before=before[1], nonzero_after=count_nonzero_params(model), macs_before=macs, macs_after=macs_after,
        predicted=outcome.predicted, groups=outcome.groups, skipped=outcome.skipped, units=outcome.units,
        profile=outcome.profile, seconds=time.perf_counter() - start)
