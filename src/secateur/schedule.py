"""Pruning schedules: one-shot, iterative rounds, and gradual pruning with the cubic schedule of
Zhu & Gupta (2017), interleaved with training."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InvalidParameterError
from .methods import Latency, SemiStructured, Structured, Unstructured
from .plan import Plan, apply
from .statistics import tensor_name
from .unstructured import unstructured_masks

if TYPE_CHECKING:
    from .pruning import PruneResult


def cubic_sparsity(step: int, final: float, start: int, end: int, initial: float = 0.0) -> float:
    """Zhu & Gupta's schedule: ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** 3``, flat outside.

    >>> cubic_sparsity(0, 0.9, 0, 100), cubic_sparsity(50, 0.9, 0, 100), cubic_sparsity(100, 0.9, 0, 100)
    (0.0, 0.7875, 0.9)
    """
    if end <= start:
        raise InvalidParameterError(f"end={end} must come after start={start}")
    t = min(max(step, start), end)
    return final + (initial - final) * (1 - (t - start) / (end - start)) ** 3


def iterative_sparsities(final: float, rounds: int) -> list[float]:
    """Sparsity after each of ``rounds`` prune/fine-tune rounds, removing the same fraction of what is left
    each time (the kept fraction falls geometrically).

    >>> [round(s, 3) for s in iterative_sparsities(0.75, 2)]
    [0.5, 0.75]
    """
    if rounds < 1:
        raise InvalidParameterError(f"rounds={rounds} must be at least 1")
    return [1 - (1 - final) ** (r / rounds) for r in range(1, rounds + 1)]


@dataclass
class GradualPruning:
    """Raise unstructured sparsity along the cubic schedule while training: call ``step(global_step)``
    after every optimizer step (``finetune(..., pruning=...)`` does). Masks only grow, so weights
    pruned earlier stay pruned; the final sparsity is reached exactly at ``end``.

    ``rewind`` keeps a copy of the weights at ``start`` and resets the surviving ones to it after the
    last pruning step (lottery-ticket rewinding, Frankle et al. 2020).
    """

    method: Unstructured
    start: int
    end: int
    every: int = 10
    rewind: bool = False
    history: list[tuple[int, float]] = field(default_factory=list)
    _rewind_state: dict[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.method, SemiStructured):
            raise InvalidParameterError("N:M patterns are reached in one step; use Unstructured for gradual schedules")
        cubic_sparsity(self.start, self.method.sparsity, self.start, self.end)  # validates start < end

    def due(self, step: int) -> bool:
        return self.start <= step <= self.end and ((step - self.start) % self.every == 0 or step == self.end)

    def step(self, model: nn.Module, step: int) -> None:
        if self.rewind and self._rewind_state is None and step >= self.start:
            self._rewind_state = {tensor_name(n): p.detach().clone() for n, p in model.named_parameters()}
        if not self.due(step):
            return
        sparsity = cubic_sparsity(step, self.method.sparsity, self.start, self.end)
        with torch.no_grad():
            apply(model, Plan(masks=unstructured_masks(model, replace(self.method, sparsity=sparsity))), remember=False)
            self.history.append((step, sparsity))
            if step == self.end and self._rewind_state is not None:  # masked weights stay zero: mask * original
                for n, p in model.named_parameters():
                    p.copy_(self._rewind_state[tensor_name(n)])


def iterative_prune(model: nn.Module, method: Unstructured | Structured, rounds: int,
                    recover: Callable[[nn.Module], object], example_inputs: object = None, calibration: object = None,
                    loss_fn: Callable = F.cross_entropy, progress: bool = True) -> list[PruneResult]:
    """Prune in ``rounds`` steps to ``method``'s sparsity (or target), calling ``recover(model)`` (your
    fine-tuning) after each. The kept fraction falls geometrically, by the same factor each round.
    Structured rounds share one :class:`~secateur.planner.Planner` session: the graph is captured once
    and renumbered after each round; units are re-scored on the recovered weights.
    """
    from .planner import Planner
    from .pruning import prune

    if isinstance(method, Structured) and (isinstance(method.target, Latency) or "blocks" in (method.units or ())):
        raise InvalidParameterError("iterative rounds take a sparsity, Macs or Params target over width units; a "
                                    "latency budget or block removal is one-shot")
    if isinstance(method, Unstructured):  # masks accumulate: each round asks for the cumulative sparsity
        steps = [replace(method, sparsity=s) for s in iterative_sparsities(method.sparsity, rounds)]
    elif method.target is not None:  # each round keeps the same fraction of what the last one left
        steps = [replace(method, target=type(method.target)(method.target.fraction ** (1 / rounds)))] * rounds
    else:
        steps = [replace(method, sparsity=1 - (1 - method.sparsity) ** (1 / rounds))] * rounds
    planner = Planner(model, method, example_inputs, calibration, loss_fn) if isinstance(method, Structured) else None
    results = []
    for step in steps:
        results.append(prune(model, step, example_inputs, calibration, loss_fn, progress, planner=planner))
        if planner is not None:
            planner.commit(results[-1].plan)
        recover(model)
    return results


def steps_for(epochs: float, batches_per_epoch: int) -> int:
    """Optimizer steps in ``epochs`` epochs (rounded up)."""
    return math.ceil(epochs * batches_per_epoch)
