"""The one-shot methods and their math: masks from magnitude or Wanda scores, and SparseGPT's
OBS update (Frantar & Alistarh 2023). Each works on one Linear weight with statistics of its input."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ..errors import InvalidSparsityError
from ..unstructured import nm_mask


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """``"unstructured"`` -> None, ``"2:4"`` -> (2, 4).

    >>> parse_pattern("4:8")
    (4, 8)
    """
    if pattern == "unstructured":
        return None
    match = re.fullmatch(r"(\d+):(\d+)", pattern)
    if not match or not 0 < int(match[1]) < int(match[2]):
        raise InvalidSparsityError(f"pattern={pattern!r} is not 'unstructured' or 'N:M' with 0 < N < M, e.g. '2:4'")
    return int(match[1]), int(match[2])


@dataclass(frozen=True)
class _OneShot:
    sparsity: float = 0.5
    pattern: str = "unstructured"
    ignore: tuple[str, ...] = ("lm_head", "*embed*")

    def __post_init__(self) -> None:
        nm = parse_pattern(self.pattern)
        if nm is None and not 0 <= self.sparsity < 1:
            raise InvalidSparsityError(f"sparsity={self.sparsity} is outside [0, 1); pass e.g. 0.5")

    @property
    def nm(self) -> tuple[int, int] | None:
        return parse_pattern(self.pattern)

    @property
    def target(self) -> float:
        """The fraction of weights set to zero (an N:M pattern fixes it at 1 - N/M)."""
        return 1 - self.nm[0] / self.nm[1] if self.nm else self.sparsity

    needs: str = "none"


@dataclass(frozen=True)
class Magnitude(_OneShot):
    """Smallest ``|w|`` first, per layer (or per N:M group). A baseline; needs no calibration."""

    needs: str = "none"


@dataclass(frozen=True)
class Wanda(_OneShot):
    """Wanda (Sun et al. 2024): score ``|W_ij| * ||X_j||_2``, compared within each output row."""

    needs: str = "norms"


@dataclass(frozen=True)
class SparseGPT(_OneShot):
    """SparseGPT: OBS mask selection and weight update over blocks of columns, with the Hessian
    ``H = 2 X^T X`` dampened by ``dampening * mean(diag H)``."""

    blocksize: int = 128
    dampening: float = 0.01
    needs: str = "hessian"


def _row_topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    keep = scores.shape[1] - int(scores.shape[1] * sparsity)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask.scatter_(1, torch.topk(scores, keep, dim=1).indices, True)
    return mask


def magnitude_prune(weight: torch.Tensor, method: Magnitude) -> torch.Tensor:
    """Zero the smallest weights of the whole matrix (or of every N:M group)."""
    scores = weight.abs()
    if method.nm:
        return weight * nm_mask(scores, *method.nm)
    k = int(weight.numel() * method.sparsity)
    if k == 0:
        return weight.clone()
    threshold = torch.kthvalue(scores.flatten(), k).values
    return weight * (scores > threshold)


def wanda_prune(weight: torch.Tensor, input_norm: torch.Tensor, method: Wanda) -> torch.Tensor:
    """Zero the lowest ``|W| * ||X_j||`` of each output row (or of every N:M group)."""
    scores = weight.abs() * input_norm[None, :]
    mask = nm_mask(scores, *method.nm) if method.nm else _row_topk_mask(scores, method.sparsity)
    return weight * mask


def inverse_hessian_factor(hessian: torch.Tensor, dampening: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The upper Cholesky factor of the dampened inverse Hessian, and the dead input columns."""
    h = hessian.float().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    h += dampening * torch.mean(torch.diag(h)) * torch.eye(h.shape[0])
    # cholesky_solve, not cholesky_inverse: the latter took 11 s for a 1536 x 1536 matrix here (0.18 s)
    inverse = torch.cholesky_solve(torch.eye(h.shape[0]), torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True), dead


def sparsegpt_prune(weight: torch.Tensor, hessian: torch.Tensor, method: SparseGPT,
                    factor: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """SparseGPT on one layer: returns the pruned, error-compensated weight. ``factor`` (from
    :func:`inverse_hessian_factor`) can be shared by layers that read the same input."""
    hinv, dead = factor or inverse_hessian_factor(hessian, method.dampening)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the column loop is thousands of tiny ops: one thread is 2-20x faster here
    try:
        return _obs_columns(weight, hinv, dead, method).to(weight.dtype)
    finally:
        torch.set_num_threads(threads)


def _obs_columns(weight: torch.Tensor, hinv: torch.Tensor, dead: torch.Tensor, method: SparseGPT) -> torch.Tensor:
    """The blocked column loop of SparseGPT: choose the mask, zero it, spread each error over later columns."""
    w = weight.detach().float().contiguous().clone()
    w[:, dead] = 0
    nm = method.nm
    for i1 in range(0, w.shape[1], method.blocksize):
        i2 = min(i1 + method.blocksize, w.shape[1])
        w1, hinv1 = w[:, i1:i2].clone(), hinv[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        keep = torch.ones(w1.shape)
        if nm is None:  # adaptive mask selection: the block's least salient weights, OBS saliency w^2/[H^-1]_jj^2
            saliency = (w1.pow(2) / torch.diag(hinv1).pow(2)[None, :]).flatten()
            keep.view(-1)[torch.topk(saliency, int(saliency.numel() * method.sparsity), largest=False).indices] = 0
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                block = w1[:, i : i + nm[1]].pow(2) / torch.diag(hinv1)[i : i + nm[1]].pow(2)[None, :]
                keep[:, i : i + nm[1]] = nm_mask(block, *nm).float()
            col = w1[:, i]
            err = col * (1 - keep[:, i]) / hinv1[i, i]
            w1[:, i:].addr_(err, hinv1[i, i:], alpha=-1)  # column i becomes exactly the pruned column
            err1[:, i] = err
        w[:, i1:i2] = w1 * keep  # the pruned entries are zero up to rounding: make them exactly zero
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w
