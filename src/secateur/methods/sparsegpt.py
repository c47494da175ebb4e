"""SparseGPT (Frantar & Alistarh 2023, "Massive Language Models Can Be Accurately Pruned in One-Shot").

The streaming statistic is the Hessian of the layer's reconstruction error, ``H = 2 X^T X / n``,
accumulated batch by batch. The weight update is the OBS column loop: over blocks of columns choose
the mask (adaptively per block, or N:M), zero it, and spread each pruned weight's error over the
columns not yet visited using the Cholesky factor of the dampened inverse Hessian.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InvalidParameterError
from ..selection import nm_mask
from .base import register_method
from .oneshot import OneShot


class Hessian:
    """Running ``X^T X`` and token count; ``factor(d)`` is the upper Cholesky factor of the inverse of
    ``2 X^T X / n + d * mean(diag) * I`` (cached: layers that read one input share it)."""

    def __init__(self, in_features: int) -> None:
        self.sum = torch.zeros(in_features, in_features)
        self.count = 0
        self._factors: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, x: torch.Tensor) -> None:
        self.sum.addmm_(x.T.float().cpu(), x.float().cpu())
        self.count += x.shape[0]
        self._factors.clear()

    def matrix(self) -> torch.Tensor:
        return self.sum * (2 / max(self.count, 1))

    def factor(self, dampening: float) -> tuple[torch.Tensor, torch.Tensor]:
        if dampening not in self._factors:
            self._factors[dampening] = inverse_hessian_factor(self.matrix(), dampening)
        return self._factors[dampening]


def inverse_hessian_factor(hessian: torch.Tensor, dampening: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The upper Cholesky factor of the dampened inverse Hessian, and the dead input columns."""
    h = hessian.float().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    h += dampening * torch.mean(torch.diag(h)) * torch.eye(h.shape[0])
    # cholesky_solve, not cholesky_inverse: the latter took 11 s for a 1536 x 1536 matrix here (0.18 s)
    inverse = torch.cholesky_solve(torch.eye(h.shape[0]), torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True), dead


@register_method
@dataclass(frozen=True)
class SparseGPT(OneShot):
    """OBS mask selection and weight update over blocks of ``blocksize`` columns, with the Hessian
    dampened by ``dampening * mean(diag H)``."""

    blocksize: int = 128
    dampening: float = 0.01
    name = "sparsegpt"

    def validate(self) -> None:
        super().validate()
        if self.blocksize < 1:
            raise InvalidParameterError(f"blocksize={self.blocksize} must be a positive number of columns, e.g. 128")
        if self.nm and self.blocksize % self.nm[1]:
            raise InvalidParameterError(f"blocksize={self.blocksize} must be a multiple of M={self.nm[1]}")
        if not 0 <= self.dampening < 10:
            raise InvalidParameterError(f"dampening={self.dampening} must be in [0, 10), e.g. 0.01")

    def new_statistic(self, in_features: int) -> Hessian:
        return Hessian(in_features)

    def prune_weight(self, weight, statistic, sparsity):
        hinv, dead = statistic.factor(self.dampening)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the column loop is thousands of tiny ops: one thread is 2-20x faster here
        try:
            return obs_columns(weight, hinv, dead, self, sparsity)
        finally:
            torch.set_num_threads(threads)


def obs_columns(weight: torch.Tensor, hinv: torch.Tensor, dead: torch.Tensor, method: SparseGPT,
                sparsity: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The blocked column loop: choose the mask, zero it, spread each error over later columns."""
    w = weight.detach().float().contiguous().clone()
    w[:, dead] = 0
    keep_all = torch.ones(w.shape, dtype=torch.bool)
    nm = method.nm
    for i1 in range(0, w.shape[1], method.blocksize):
        i2 = min(i1 + method.blocksize, w.shape[1])
        w1, hinv1 = w[:, i1:i2].clone(), hinv[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        keep = torch.ones(w1.shape)
        if nm is None:  # adaptive mask selection: the block's least salient weights, OBS saliency w^2/[H^-1]_jj^2
            saliency = (w1.pow(2) / torch.diag(hinv1).pow(2)[None, :]).flatten()
            keep.view(-1)[torch.topk(saliency, int(saliency.numel() * sparsity), largest=False).indices] = 0
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                block = w1[:, i : i + nm[1]].pow(2) / torch.diag(hinv1)[i : i + nm[1]].pow(2)[None, :]
                keep[:, i : i + nm[1]] = nm_mask(block, *nm).float()
            err = w1[:, i] * (1 - keep[:, i]) / hinv1[i, i]
            w1[:, i:].addr_(err, hinv1[i, i:], alpha=-1)  # column i becomes exactly the pruned column
            err1[:, i] = err
        w[:, i1:i2] = w1 * keep  # the pruned entries are zero up to rounding: make them exactly zero
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
        keep_all[:, i1:i2] = keep.bool()
    return w, keep_all
