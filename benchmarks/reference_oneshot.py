"""A plain reference of one-shot Wanda and SparseGPT, written the way the papers' published code runs them,
for ``benchmarks/llm.py`` (it shares nothing with secateur's engine).

The first block's input is captured for every calibration sequence; then, block by block: one forward
per sequence (batch 1) through the *dense* block with hooks accumulating every Linear's statistic, every
Linear pruned, one more forward per sequence for the block's outputs. Wanda (Sun et al. 2024): keep the
largest ``|W_ij| * ||X_j||`` of each output row (or N of every M). SparseGPT (Frantar & Alistarh 2023,
Algorithm 1): Hessian ``2 X^T X / n`` with 1% dampening, its inverse through ``cholesky_inverse`` and the
upper Cholesky factor of that, blocks of 128 columns with adaptive mask selection (or N:M), the OBS update.
"""

from __future__ import annotations

import torch
from torch import nn


class _Stop(Exception):
    pass


def _first_inputs(model: nn.Module, calibration: torch.Tensor) -> tuple[list[torch.Tensor], dict]:
    layers, inputs, extra = model.model.layers, [], {}

    def hook(_, args, kwargs):
        inputs.append(args[0] if args else kwargs.pop("hidden_states"))
        extra.update(kwargs)
        raise _Stop

    handle = layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    for row in calibration:
        try:
            model(input_ids=row[None], use_cache=False)
        except _Stop:
            pass
    handle.remove()
    return inputs, extra


def _out(layer: nn.Module, x: torch.Tensor, extra: dict) -> torch.Tensor:
    out = layer(x, **extra)
    return out[0] if isinstance(out, tuple) else out


def _wanda(weight: torch.Tensor, norms_sq: torch.Tensor, sparsity: float, nm) -> torch.Tensor:
    metric = weight.abs() * norms_sq.sqrt()[None, :]
    mask = torch.zeros_like(weight, dtype=torch.bool)  # True: pruned
    if nm:
        for i in range(0, metric.shape[1], nm[1]):
            part = metric[:, i : i + nm[1]]
            mask.scatter_(1, i + torch.topk(part, nm[1] - nm[0], dim=1, largest=False)[1], True)
    else:
        order = torch.sort(metric, dim=-1, stable=True)[1]
        mask.scatter_(1, order[:, : int(metric.shape[1] * sparsity)], True)
    return weight.masked_fill(mask, 0)


def _sparsegpt(weight: torch.Tensor, hessian: torch.Tensor, sparsity: float, nm, blocksize=128,
               percdamp=0.01) -> torch.Tensor:
    w, h = weight.clone().float(), hessian.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    h += percdamp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0])
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    mask = None
    for i1 in range(0, w.shape[1], blocksize):
        i2 = min(i1 + blocksize, w.shape[1])
        w1, q1, err1 = w[:, i1:i2].clone(), torch.zeros_like(w[:, i1:i2]), torch.zeros_like(w[:, i1:i2])
        hinv1 = hinv[i1:i2, i1:i2]
        if not nm:
            tmp = w1**2 / torch.diag(hinv1).reshape(1, -1) ** 2
            threshold = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
            mask = tmp <= threshold
        else:
            mask = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(i2 - i1):
            col, d = w1[:, i], hinv1[i, i]
            if nm and i % nm[1] == 0:
                tmp = w1[:, i : i + nm[1]] ** 2 / torch.diag(hinv1)[i : i + nm[1]].reshape(1, -1) ** 2
                mask.scatter_(1, i + torch.topk(tmp, nm[1] - nm[0], dim=1, largest=False)[1], True)
            q = col.clone()
            q[mask[:, i]] = 0
            q1[:, i] = q
            err = (col - q) / d
            w1[:, i:] -= err.unsqueeze(1).matmul(hinv1[i, i:].unsqueeze(0))
            err1[:, i] = err
        w[:, i1:i2] = q1
        w[:, i2:] -= err1.matmul(hinv[i1:i2, i2:])
    return w


class _Running:
    """A layer's running statistic, as the reference hooks keep it: mean of ``||x_j||^2`` (Wanda) or
    ``2 X^T X / n`` (SparseGPT), rescaled as samples arrive."""

    def __init__(self, method: str, size: int) -> None:
        self.method, self.count = method, 0
        self.value = torch.zeros(size) if method == "wanda" else torch.zeros(size, size)

    def add(self, _: nn.Module, args: tuple, __: object) -> None:
        x = args[0].reshape(-1, args[0].shape[-1]).float()
        seen, self.count = self.count, self.count + x.shape[0]
        self.value *= seen / self.count
        if self.method == "wanda":
            self.value += x.pow(2).sum(0) / self.count
        else:
            x = (2 / self.count) ** 0.5 * x
            self.value += x.T @ x


@torch.no_grad()
def prune_reference(model: nn.Module, method: str, calibration: torch.Tensor, sparsity: float = 0.5,
                    pattern: str = "unstructured") -> None:
    """Prune every Linear of every decoder block of a Llama-style model in place ("wanda" or "sparsegpt")."""
    nm = None if pattern == "unstructured" else tuple(map(int, pattern.split(":")))
    inputs, extra = _first_inputs(model, calibration)
    for layer in model.model.layers:
        linears = {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        stats = {n: _Running(method, m.in_features) for n, m in linears.items()}
        handles = [m.register_forward_hook(stats[n].add) for n, m in linears.items()]
        for x in inputs:
            _out(layer, x, extra)
        for h in handles:
            h.remove()
        for name, m in linears.items():
            new = (_wanda if method == "wanda" else _sparsegpt)(m.weight.float(), stats[name].value, sparsity, nm)
            m.weight.copy_(new.to(m.weight.dtype))
        inputs = [_out(layer, x, extra) for x in inputs]
