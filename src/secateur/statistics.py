"""Calibration statistics for the data-driven criteria: gradients (taylor, hessian) and the L2 norm of
every input feature of each Linear and ungrouped Conv (activation; other layers fall back to ``|w|``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .errors import PruningError
from .transaction import eval_mode

Stats = dict[str, dict[str, torch.Tensor]]


def tensor_name(param_name: str) -> str:
    """``conv.parametrizations.weight.original`` -> ``conv.weight`` (masked weights are parametrized)."""
    return param_name.replace("parametrizations.", "").replace(".original", "")


def _gradients(model: nn.Module, batches: Iterable, loss_fn: Callable) -> Stats:
    grads: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    count = 0
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    with eval_mode(model):
        for batch in batches:
            if not isinstance(batch, list | tuple) or len(batch) != 2:
                raise PruningError("gradient criteria need calibration batches of (inputs, targets)")
            x, y = batch
            model.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            for n, p in params.items():
                if p.grad is not None:
                    grads[n] = grads.get(n, 0) + p.grad.detach()
                    squares[n] = squares.get(n, 0) + p.grad.detach().pow(2)
            count += 1
    model.zero_grad(set_to_none=True)
    return {tensor_name(n): {"grad": grads[n], "grad_sq": squares[n] / max(count, 1)} for n in grads}


def _input_norms(model: nn.Module, batches: Iterable) -> Stats:
    sums: dict[str, torch.Tensor] = {}
    hooks = []

    def hook(name: str, module: nn.Module):
        def fn(_, args):
            x = args[0].detach().float()
            if isinstance(module, nn.Linear):
                s = x.reshape(-1, x.shape[-1]).pow(2).sum(0)
            else:
                s = x.transpose(0, 1).reshape(x.shape[1], -1).pow(2).sum(1)
            sums[name] = sums.get(name, 0) + s
        return fn

    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) or isinstance(m, nn.modules.conv._ConvNd) and m.groups == 1 and not m.transposed:
            hooks.append(m.register_forward_pre_hook(hook(f"{name}.weight" if name else "weight", m)))
    try:
        with torch.no_grad(), eval_mode(model):
            for batch in batches:
                x = batch[0] if isinstance(batch, list | tuple) else batch
                model(x)
    finally:
        for h in hooks:
            h.remove()
    return {n: {"input_norm": s.sqrt()} for n, s in sums.items()}


def collect_statistics(model: nn.Module, criterion: str, calibration: Iterable | None,
                       loss_fn: Callable = F.cross_entropy) -> Stats:
    """Statistics ``criterion`` needs from ``calibration`` batches (none for weight-only criteria)."""
    from .criteria import NEEDS_DATA

    if criterion not in NEEDS_DATA:
        return {}
    if calibration is None:
        raise PruningError(f"criterion {criterion!r} needs calibration=... (batches of inputs, or of "
                           "(inputs, targets) for gradients); or choose a weight-only criterion such as 'l2'")
    batches = list(calibration)
    return _input_norms(model, batches) if criterion == "activation" else _gradients(model, batches, loss_fn)
