"""Calibration statistics for data-driven criteria: gradients (``grad``: summed, ``grad_sq``: mean squared)
and the L2 norm of every input feature of each Linear and ungrouped Conv (``input_norm``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .criteria import Criterion
from .errors import PruningError
from .inputs import Batch
from .loss import LossFn, batch_loss
from .progress import progress_bar
from .transaction import eval_mode

Stats = dict[str, dict[str, torch.Tensor]]


def tensor_name(param_name: str) -> str:
    """``conv.parametrizations.weight.original`` -> ``conv.weight`` (masked weights are parametrized)."""
    return param_name.replace("parametrizations.", "").replace(".original", "")


def _gradients(model: nn.Module, batches: Iterable[Batch], loss_fn: LossFn, progress: bool) -> Stats:
    grads: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    count = 0
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    with eval_mode(model):
        for batch in progress_bar(batches, "gradients", enabled=progress):
            model.zero_grad(set_to_none=True)
            batch_loss(model, batch, loss_fn)[0].backward()
            for n, p in params.items():
                if p.grad is not None:
                    grads[n] = grads.get(n, 0) + p.grad.detach()
                    squares[n] = squares.get(n, 0) + p.grad.detach().pow(2)
            count += 1
    model.zero_grad(set_to_none=True)
    return {tensor_name(n): {"grad": grads[n], "grad_sq": squares[n] / max(count, 1)} for n in grads}


def _hookable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1
                                             and not module.transposed)


def _input_norms(model: nn.Module, batches: Iterable[Batch], progress: bool) -> Stats:
    sums: dict[str, torch.Tensor] = {}

    def hook(name: str, module: nn.Module):
        def fn(_, args):
            x = args[0].detach().float()
            if isinstance(module, nn.Linear):
                s = x.reshape(-1, x.shape[-1]).pow(2).sum(0)
            else:
                s = x.transpose(0, 1).reshape(x.shape[1], -1).pow(2).sum(1)
            sums[name] = sums.get(name, 0) + s
        return fn

    hooks = [m.register_forward_pre_hook(hook(f"{n}.weight" if n else "weight", m))
             for n, m in model.named_modules() if _hookable(m)]
    try:
        with torch.no_grad(), eval_mode(model):
            for batch in progress_bar(batches, "activations", enabled=progress):
                batch.inputs.call(model)
    finally:
        for h in hooks:
            h.remove()
    return {n: {"input_norm": s.sqrt()} for n, s in sums.items()}


def collect_statistics(model: nn.Module, criterion: Criterion, batches: list[Batch], loss_fn: LossFn,
                       progress: bool = False) -> Stats:
    """The statistics ``criterion`` needs, from calibration ``batches`` (none for weight-only criteria)."""
    if not criterion.needs:
        return {}
    if not batches:
        raise PruningError(f"criterion {criterion.name!r} needs calibration=... (batches of inputs, or of "
                           "(inputs, targets) for gradients); or choose a weight-only criterion such as 'l2'")
    stats: Stats = {}
    if "input_norm" in criterion.needs:
        stats = _input_norms(model, batches, progress)
    if criterion.needs & {"grad", "grad_sq"}:
        for name, values in _gradients(model, batches, loss_fn, progress).items():
            stats.setdefault(name, {}).update(values)
    return stats
