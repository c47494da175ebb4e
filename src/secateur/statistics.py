"""Calibration statistics for data-driven criteria, streamed over the batches in one pass.

- ``grad`` (summed) and ``grad_sq`` (mean squared): gradients of the loss;
- ``input_norm``: the L2 norm of every input feature of each Linear (``nn.Linear`` or a Hugging Face
  ``Conv1D``) and ungrouped Conv, over every token / position (``input_dim``: the weight dimension that
  indexes the features);
- ``input_moments``: per input feature also ``input_mean``, ``input_var`` (over tokens) and
  ``input_seq_abs``: the mean over samples of (the mean over a sample's positions of ``|x|``) squared,
  Minitron's (batch L2, sequence mean) aggregation.

Forward hooks and the backward pass share the loop, so a criterion that needs both still reads each
batch once. Layers fed the very same tensor (q/k/v, gate/up) share one set of statistics.
"""

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
INPUT_NEEDS = frozenset({"input_norm", "input_moments"})


def tensor_name(param_name: str) -> str:
    """``conv.parametrizations.weight.original`` -> ``conv.weight`` (masked weights are parametrized)."""
    return param_name.replace("parametrizations.", "").replace(".original", "")


def _hookable(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear) or (type(module).__name__ == "Conv1D" and hasattr(module, "nf")):
        return True
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups == 1 and not module.transposed


def _samples(x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """Inputs as ``(samples, positions, features)``: a conv's channels move last, a 2-D input has one position."""
    x = x.detach().float()
    if isinstance(module, nn.modules.conv._ConvNd):
        return x.flatten(2).transpose(1, 2)
    return x.reshape(x.shape[0], -1, x.shape[-1]) if x.dim() > 2 else x[:, None, :]


class InputMoments:
    """Running sums over one layer's input features; streamed batch by batch.

    >>> m = InputMoments()
    >>> m.update(torch.tensor([[[1.0, -2.0], [3.0, 2.0]]]))
    >>> m.finish()["input_mean"].tolist(), m.finish()["input_seq_abs"].tolist()
    ([2.0, 0.0], [4.0, 4.0])
    """

    def __init__(self) -> None:
        self.tokens = self.samples = 0
        self.total = self.squares = self.seq_abs = 0.0

    def update(self, x: torch.Tensor) -> None:
        flat = x.reshape(-1, x.shape[-1])
        self.tokens += flat.shape[0]
        self.samples += x.shape[0]
        self.total = self.total + flat.sum(0)
        self.squares = self.squares + flat.pow(2).sum(0)
        self.seq_abs = self.seq_abs + x.abs().mean(1).pow(2).sum(0)

    def finish(self) -> dict[str, torch.Tensor]:
        mean = self.total / self.tokens
        var = (self.squares - self.tokens * mean.pow(2)).clamp_min(0) / max(self.tokens - 1, 1)
        return {"input_norm": self.squares.sqrt(), "input_mean": mean, "input_var": var,
                "input_seq_abs": self.seq_abs / self.samples}


def input_dim(module: nn.Module) -> int:
    """The weight dimension that indexes a layer's input features (a Hugging Face Conv1D stores ``(in, out)``)."""
    return 0 if type(module).__name__ == "Conv1D" else 1


class _InputHooks:
    """Forward pre-hooks on every hookable layer; a layer fed the previous layer's input tensor shares it."""

    def __init__(self, model: nn.Module) -> None:
        self.moments: dict[str, InputMoments] = {}
        self.dims = {f"{n}.weight" if n else "weight": input_dim(m) for n, m in model.named_modules() if _hookable(m)}
        self.alias: dict[str, str] = {}
        self._last: tuple[torch.Tensor, str] | None = None
        self.handles = [m.register_forward_pre_hook(self._hook(f"{n}.weight" if n else "weight", m))
                        for n, m in model.named_modules() if _hookable(m)]

    def _hook(self, name: str, module: nn.Module):
        def fn(_, args):
            x = args[0]
            if self._last is not None and self._last[0] is x:
                self.alias.setdefault(name, self._last[1])
                return
            self._last = (x, name)
            self.moments.setdefault(name, InputMoments()).update(_samples(x, module))
        return fn

    def finish(self) -> Stats:
        for h in self.handles:
            h.remove()
        self._last = None
        stats = {n: {**m.finish(), "input_dim": torch.tensor(self.dims[n])} for n, m in self.moments.items()}
        stats.update({n: {**stats[first], "input_dim": torch.tensor(self.dims[n])} for n, first in self.alias.items()
                      if first in stats and n not in stats})
        return stats


def _passes(model: nn.Module, batches: Iterable[Batch], loss_fn: LossFn, grads: bool, progress: bool) -> Stats:
    """One pass over ``batches``: forward (with the input hooks) and, for ``grads``, backward."""
    sums: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    count = 0
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for batch in progress_bar(batches, "calibration", enabled=progress):
        if not grads:
            with torch.no_grad():
                batch.inputs.call(model)
            continue
        model.zero_grad(set_to_none=True)
        batch_loss(model, batch, loss_fn)[0].backward()
        for n, p in params.items():
            if p.grad is not None:
                sums[n] = sums.get(n, 0) + p.grad.detach()
                squares[n] = squares.get(n, 0) + p.grad.detach().pow(2)
        count += 1
    model.zero_grad(set_to_none=True)
    return {tensor_name(n): {"grad": sums[n], "grad_sq": squares[n] / max(count, 1)} for n in sums}


def collect_statistics(model: nn.Module, criterion: Criterion, batches: list[Batch], loss_fn: LossFn,
                       progress: bool = False) -> Stats:
    """The statistics ``criterion`` needs, from calibration ``batches`` in one pass (none for weight-only
    criteria)."""
    if not criterion.needs:
        return {}
    if not batches:
        raise PruningError(f"criterion {criterion.name!r} needs calibration=... (batches of inputs, or of "
                           "(inputs, targets) for gradients); or choose a weight-only criterion such as 'l2'")
    hooks = _InputHooks(model) if criterion.needs & INPUT_NEEDS else None
    try:
        with eval_mode(model):
            grads = _passes(model, batches, loss_fn, bool(criterion.needs & {"grad", "grad_sq"}), progress)
    finally:
        stats = hooks.finish() if hooks else {}
    for name, values in grads.items():
        stats[name] = {**stats.get(name, {}), **values}
    return stats
