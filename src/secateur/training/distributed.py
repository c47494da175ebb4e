"""Data-parallel training under ``torchrun`` / ``accelerate launch``: when a process group is up,
:func:`~secateur.finetune` wraps the model in ``DistributedDataParallel``, shards token windows by
rank, writes checkpoints and logs from rank 0 only, and waits for it at each checkpoint."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn


def world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) without a process group.

    >>> world()
    (0, 1)
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0 (or without a process group)."""
    return world()[0] == 0


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if world()[1] > 1:
        dist.barrier()


def data_parallel(model: nn.Module) -> nn.Module:
    """``model`` wrapped in DDP when several processes train it (gradients averaged across ranks), else itself."""
    if world()[1] == 1:
        return model
    device = next(model.parameters()).device
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


@contextlib.contextmanager
def accumulating(model: nn.Module, last: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce on every micro-batch but the ``last`` of an accumulation window."""
    if last or not isinstance(model, nn.parallel.DistributedDataParallel):
        yield
    else:
        with model.no_sync():
            yield


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average the gradients of parameters DDP does not own (distillation projections) across ranks."""
    size = world()[1]
    if size == 1:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= size
