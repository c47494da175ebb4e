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
from ..selection import lowest, nm_mask
from .base import register_method
from .oneshot import OneShot

SPLIT = 256  # inputs from which X^T X is accumulated as its upper blocks only (a quarter fewer flops)


class Hessian:
    """Running ``X^T X`` and token count; ``factor(d)`` is the upper Cholesky factor of the inverse of
    ``2 X^T X / n + d * mean(diag) * I`` (cached: layers that read one input share it)."""

    def __init__(self, in_features: int) -> None:
        self.sum: torch.Tensor | None = None  # made on the device of the first batch
        self.size = in_features
        self.count = 0
        self._factors: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, x: torch.Tensor) -> None:
        x = x.float()
        if self.sum is None:
            self.sum = torch.zeros(self.size, self.size, device=x.device)
        n = x.shape[1]
        cuts = [0, n] if n < SPLIT else [n * j // 4 for j in range(5)]
        for a, b in zip(cuts, cuts[1:], strict=False):  # the blocks on and above the diagonal
            self.sum[a:b, a:].addmm_(x[:, a:b].T, x[:, a:])
        self.count += x.shape[0]
        self._factors.clear()

    def matrix(self) -> torch.Tensor:
        if self.sum is None:
            return torch.zeros(self.size, self.size)
        out = torch.triu(self.sum)
        out += torch.triu(self.sum, 1).T
        return out.mul_(2 / max(self.count, 1))

    def factor(self, dampening: float) -> tuple[torch.Tensor, torch.Tensor]:
        if dampening not in self._factors:
            self._factors[dampening] = inverse_hessian_factor(self.matrix(), dampening)  # a fresh matrix
        return self._factors[dampening]


def inverse_hessian_factor(hessian: torch.Tensor, dampening: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The upper Cholesky factor ``U`` of the dampened inverse Hessian (``H^-1 = U^T U``), and the dead
    input columns; ``hessian`` (float32) is dampened in place. With ``H = V V^T``, ``V`` upper (the
    Cholesky factor of ``H`` with rows and columns reversed), ``U = V^-1``: one factorisation and one
    triangular solve, no explicit inverse (a quarter of the flops), and at most three n x n matrices alive.
    """
    dead = torch.diag(hessian) == 0
    hessian[dead, dead] = 1
    hessian.diagonal().add_(dampening * torch.mean(torch.diag(hessian)))
    reversed_ = hessian.flip(0, 1)
    upper = torch.linalg.cholesky(reversed_).flip(0, 1)
    del reversed_
    eye = torch.eye(hessian.shape[0], device=hessian.device)
    return torch.linalg.solve_triangular(upper, eye, upper=True, out=eye), dead


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
        return obs_columns(weight, hinv.to(weight.device), dead.to(weight.device), self, sparsity)


def obs_columns(weight: torch.Tensor, hinv: torch.Tensor, dead: torch.Tensor, method: SparseGPT,
                sparsity: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The blocked column loop: choose the mask, zero it, spread each error over later columns."""
    w = weight.detach().float().clone()
    w[:, dead] = 0
    keep_all = torch.ones(w.shape, dtype=torch.bool, device=w.device)
    for i1 in range(0, w.shape[1], method.blocksize):
        i2 = min(i1 + method.blocksize, w.shape[1])
        hinv1 = hinv[i1:i2, i1:i2]
        block = w[:, i1:i2].T.contiguous()  # (columns, rows): each column contiguous for the updates below
        keep = torch.ones_like(block)
        if method.nm is None:  # adaptive mask selection: the block's least salient, OBS saliency w^2/[H^-1]_jj^2
            saliency = block.pow(2) / torch.diag(hinv1).pow(2)[:, None]
            keep[lowest(saliency, int(saliency.numel() * sparsity))] = 0
        errors = obs_block(block, keep, hinv1, method.nm)
        w[:, i1:i2] = (block * keep).T  # the pruned entries are zero up to rounding: make them exactly zero
        w[:, i2:].addmm_(errors.T, hinv[i1:i2, i2:], alpha=-1)
        keep_all[:, i1:i2] = keep.T.bool()
    return w, keep_all


def obs_block(block: torch.Tensor, keep: torch.Tensor, hinv1: torch.Tensor, nm: tuple[int, int] | None) -> torch.Tensor:
    """One block of columns (``(columns, rows)``, updated in place): prune column by column (choosing the
    N:M mask as it goes), spreading each error over the block's later columns; returns the errors. The
    loop is a few tiny operations per column, so what it can do once per block it does once: the views
    of every column, and each column's pruned entries scaled by ``1 / [H^-1]_ii``."""
    diag = torch.diag(hinv1)
    errors = torch.empty_like(block)
    scaled = (1 - keep) / diag[:, None]
    columns, column_errors, column_scales = block.unbind(0), errors.unbind(0), scaled.unbind(0)
    for i in range(block.shape[0]):
        if nm is not None and i % nm[1] == 0:
            group = block[i : i + nm[1]].T.pow(2) / diag[i : i + nm[1]].pow(2)[None, :]
            keep[i : i + nm[1]] = nm_mask(group, *nm).T.float()
            scaled[i : i + nm[1]] = (1 - keep[i : i + nm[1]]) / diag[i : i + nm[1], None]
        torch.mul(columns[i], column_scales[i], out=column_errors[i])
        block[i:].addr_(hinv1[i, i:], column_errors[i], alpha=-1)  # column i becomes the pruned column
    return errors
