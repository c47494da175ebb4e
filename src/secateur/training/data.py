"""Training batches: the user's iterable as given, or token windows shuffled per epoch and split by rank."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils import _pytree as pytree

from ..errors import InputError
from ..inputs import Batch, Inputs, as_batch
from ..loss import ForwardLoss, token_ids
from .distributed import world


def token_window_batches(windows: torch.Tensor, batch_size: int, seed: int) -> Iterator[Batch]:
    """Batches of ``batch_size`` rows of a ``(windows, length)`` id tensor, in an order drawn from ``seed``,
    each process taking every ``world``-th row from its rank.

    >>> [b.inputs.kwargs["input_ids"].shape[0] for b in token_window_batches(torch.zeros(5, 3, dtype=torch.long), 2, 0)]
    [2, 2, 1]
    """
    if windows.is_floating_point() or windows.dim() != 2:
        raise InputError(f"a tensor as training data is token windows, an integer (windows, length) tensor; got "
                         f"{windows.dtype} of shape {tuple(windows.shape)}. Pass other data as batches (a DataLoader "
                         "or a list of (inputs, targets))")
    rank, size = world()
    order = torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed))[rank::size]
    for i in range(0, len(order), batch_size):
        yield Batch(Inputs((), {"input_ids": windows[order[i : i + batch_size]]}))


def epoch_batches(data: Any, epoch: int, opts: Any) -> Iterator[Batch]:
    """The batches of one epoch (a distributed sampler is told the epoch, as DDP training needs)."""
    if isinstance(data, torch.Tensor):
        yield from token_window_batches(data, opts.batch_size, opts.seed + epoch)
        return
    sampler = getattr(data, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    for i, item in enumerate(data):
        try:
            yield as_batch(item, f"training batch {i}")
        except InputError:
            if not isinstance(opts.loss_fn, ForwardLoss):
                raise
            yield Batch(Inputs(), raw=item)  # the user's own forward understands it


def to_device(batch: Batch, device: torch.device) -> Batch:
    """``batch`` with every tensor on ``device``."""
    move = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
    target = batch.target.to(device) if batch.target is not None else None
    return Batch(batch.inputs.map(move), target, pytree.tree_map(move, batch.raw))


def batch_tokens(batch: Batch) -> int:
    """Tokens in a language-model batch (attention-masked ones excluded); 0 for other data."""
    ids = token_ids(batch.inputs)
    if ids is None:
        return 0
    mask = batch.inputs.kwargs.get("attention_mask")
    return int(mask.sum()) if isinstance(mask, torch.Tensor) else ids.numel()
