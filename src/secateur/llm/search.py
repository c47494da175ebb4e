"""Per-block sparsities found by evolutionary search on the model's next-token loss (``profile=LossSearch()``).

EvoPress (Sieberling, Kuznedelev, Kurtic and Alistarh 2024, "EvoPress: Accurate Dynamic Model Compression
via Evolutionary Search", ICML 2025): scores measured on a block alone (OWL's outlier ratios, a block's
own output error) do not add up to what pruning them together does to the model, so candidates are
scored on the whole model instead. Each block's sparsity is a level on a grid of ``step`` around the
request; a child moves one to three blocks up a level and as many others down a level, so the mean stays
exactly the request; each generation the best of ``offspring`` children replaces the parent if its loss
is lower. Loss: next-token cross-entropy on the last ``windows`` calibration sequences.

Candidates are pruned with Wanda masks (``|W| * ||X||`` on the dense model's inputs, measured in the
profile's dense pass), cheap to switch between levels: each weight's rank among the levels is computed
once (a byte per weight), and a candidate's forward masks each layer in place while it runs and restores
it right after, so the search holds one layer's copy, not the model's. The method then prunes with the profile found.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import torch
from torch import nn

from ..errors import PruningError
from ..inputs import token_rows
from ..methods import OneShot
from ..methods.profiles import MAX_SPARSITY, LossSearch
from ..progress import progress_bar
from ..surgery import stored
from .blocks import Layer, device_of, is_conv1d, weight_of
from .states import forward_kwargs

CHUNK = 128  # positions whose float32 log-probabilities are held at once


def levels(sparsity: float, profile: LossSearch) -> tuple[list[float], int]:
    """The grid of sparsities a block may take and the index of ``sparsity`` in it."""
    below = min(int(profile.lam / profile.step + 1e-9), int(sparsity / profile.step + 1e-9))
    above = min(int(profile.lam / profile.step + 1e-9), int((MAX_SPARSITY - sparsity) / profile.step + 1e-9))
    return [round(sparsity + k * profile.step, 12) for k in range(-below, above + 1)], below


class Masker:
    """Wanda masks of every block's layers at every level, applied in place during a forward only."""

    def __init__(self, layers: list[list[Layer]], norms: list[list[torch.Tensor]], grid: list[float]) -> None:
        self.ranks = [[(lay.module, self.rank(lay.module, n, grid)) for lay, n in zip(block, ns, strict=True)]
                      for block, ns in zip(layers, norms, strict=True)]

    @staticmethod
    def rank(module: nn.Module, norms: torch.Tensor, grid: list[float]) -> torch.Tensor:
        """For each weight (as stored), at how many of the levels its row keeps it: kept at level ``i``
        while its rank exceeds ``i``."""
        scores = weight_of(module).abs() * norms.to(module.weight.device)[None, :]
        ranked = scores.sort(dim=1).values
        rank = torch.zeros(scores.shape, dtype=torch.uint8 if len(grid) < 256 else torch.int16, device=scores.device)
        for s in grid:  # the lowest score a row keeps at this level (a level < 1 prunes fewer than all)
            rank += scores >= ranked[:, int(ranked.shape[1] * s), None]
        return rank.T.contiguous() if is_conv1d(module) else rank

    @contextlib.contextmanager
    def applied(self, chosen: list[int]) -> Iterator[None]:
        """Forwards inside see block ``i``'s layers masked at level ``chosen[i]``."""
        saved: dict[nn.Module, torch.Tensor] = {}
        level_of = {m: (rank, chosen[i]) for i, block in enumerate(self.ranks) for m, rank in block}

        def mask(module: nn.Module, _args: tuple) -> None:
            rank, level = level_of[module]
            weight = stored(module, "weight").detach()
            saved[module] = weight.clone()
            weight.masked_fill_(rank <= level, 0)

        def restore(module: nn.Module, _args: tuple, _out: object) -> None:
            stored(module, "weight").detach().copy_(saved.pop(module))

        hooks = [h for m in level_of for h in (m.register_forward_pre_hook(mask), m.register_forward_hook(restore))]
        try:
            yield
        finally:
            for h in hooks:
                h.remove()
            for module, weight in saved.items():  # a forward that failed between the two hooks
                stored(module, "weight").detach().copy_(weight)


def next_token_loss(model: nn.Module, rows: list, autocast: str | None) -> float:
    """Mean next-token cross-entropy of ``model`` on ``rows`` (tokenizer-style batches), one row at a time
    and over ``CHUNK`` positions at a time, so memory does not grow with the rows or the vocabulary."""
    device, extra = device_of(model), forward_kwargs(model)
    total = count = 0.0
    for row in rows:
        kwargs = {k: v.to(device) for k, v in row.inputs.kwargs.items()}
        with contextlib.nullcontext() if autocast is None else \
                torch.autocast(device.type, getattr(torch, autocast), cache_enabled=False):
            logits = getattr(model(**kwargs, **extra), "logits", None)
        if logits is None:
            raise PruningError("profile=search scores candidates by next-token loss, but the model's output has no "
                               "logits; use a causal language model (…ForCausalLM) or profile=owl")
        ids, mask, logits = kwargs["input_ids"][:, 1:], kwargs.get("attention_mask"), logits[:, :-1]
        weights = torch.ones_like(ids, dtype=torch.float32) if mask is None else mask[:, 1:].float()
        for start in range(0, ids.shape[1], CHUNK):
            part = slice(start, start + CHUNK)
            losses = nn.functional.cross_entropy(logits[:, part].float().transpose(1, 2), ids[:, part],
                                                 reduction="none")
            total += float((losses * weights[:, part]).sum())
        count += float(weights.sum())
    return total / max(count, 1.0)


def mutate(parent: list[int], movable: list[int], top: int, rng: random.Random) -> list[int]:
    """One to three level switches: a block up a level and another down one (the mean is kept)."""
    child = list(parent)
    for _ in range(rng.randint(1, 3)):
        up, down = rng.sample(movable, 2)
        if child[up] < top and child[down] > 0:
            child[up], child[down] = child[up] + 1, child[down] - 1
    return child


def search_profile(model: nn.Module, profile: LossSearch, layers: list[list[Layer]], norms: list[list[torch.Tensor]],
                   method: OneShot, calibration: object, progress: bool) -> list[float]:
    """Each block's sparsity, mean ``method.sparsity``, found by EvoPress's search (module docstring)."""
    rows = list(token_rows(calibration))[-profile.windows:]
    grid, center = levels(method.sparsity, profile)
    movable = [i for i, block in enumerate(layers) if block]
    parent = [center] * len(layers)
    if len(movable) < 2 or len(grid) < 2:
        return [grid[c] for c in parent]
    masker, rng = Masker(layers, norms, grid), random.Random(profile.seed)

    def loss(chosen: list[int]) -> float:
        with masker.applied(chosen):
            return next_token_loss(model, rows, method.autocast)

    best = loss(parent)
    for _ in progress_bar(range(profile.generations), "profile search", enabled=progress):
        child_loss, child = min(((loss(c), c) for c in (mutate(parent, movable, len(grid) - 1, rng)
                                                         for _ in range(profile.offspring))), key=lambda lc: lc[0])
        if child_loss < best:
            best, parent = child_loss, child
    return [grid[c] for c in parent]
