"""All-or-nothing changes to a module tree.

Surgery never edits tensors in place: it swaps Parameters, buffers, submodules, attributes and
classes (parametrizations change a module's class). Snapshotting those references is therefore
enough to restore a model exactly when anything fails half-way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def _snapshot(module: nn.Module) -> tuple:
    state = dict(module.__dict__)
    inner = {k: dict(v) for k, v in state.items() if isinstance(v, dict)}
    return module, module.__class__, state, inner


def _restore(snapshot: tuple) -> None:
    module, cls, state, inner = snapshot
    module.__class__ = cls
    module.__dict__.clear()
    module.__dict__.update(state)
    for key, content in inner.items():
        state[key].clear()
        state[key].update(content)


@contextmanager
def atomic(model: nn.Module) -> Iterator[None]:
    """Run the body; if it raises, put ``model`` back exactly as it was and re-raise.

    >>> m = nn.Linear(2, 2)
    >>> with atomic(m):
    ...     m.weight = nn.Parameter(m.weight[:1])
    >>> tuple(m.weight.shape)
    (1, 2)
    """
    snapshots = [_snapshot(m) for m in model.modules()]
    configs = {id(c): (c, dict(c.__dict__)) for m in model.modules()
               if hasattr(c := getattr(m, "config", None), "to_dict")}  # Hugging Face configs
    try:
        yield
    except BaseException:
        for snap in snapshots:
            _restore(snap)
        for config, state in configs.values():
            config.__dict__.clear()
            config.__dict__.update(state)
        raise


@contextmanager
def restored_data(model: nn.Module | None) -> Iterator[None]:
    """If the body fails, copy every tensor of ``model`` back to its value on entry, into the same objects
    (``atomic`` restores which objects the model holds; this restores what they hold). None: no-op.

    >>> m = nn.Linear(1, 1)
    >>> before = m.weight.item()
    >>> try:
    ...     with restored_data(m):
    ...         _ = m.weight.data.fill_(5.0)
    ...         raise RuntimeError
    ... except RuntimeError:
    ...     m.weight.item() == before
    True
    """
    tensors = {} if model is None else {id(t): t for t in (*model.parameters(), *model.buffers())}
    saved = [(t, t.detach().clone()) for t in tensors.values()]
    try:
        yield
    except BaseException:
        with torch.no_grad():
            for tensor, value in saved:
                tensor.copy_(value)
        raise


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run the body with every submodule in eval mode (BatchNorm statistics untouched), then restore.

    >>> m = nn.BatchNorm1d(2)
    >>> with eval_mode(m):
    ...     m.training
    False
    >>> m.training
    True
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


@contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Run the body with no parameter requiring grad, then restore every flag. Under ``no_grad`` a view of a
    parameter is a leaf that still requires grad, which hooks on module inputs (torch's FLOP counter) reject.

    >>> m = nn.Linear(2, 2)
    >>> with frozen(m):
    ...     m.weight.requires_grad
    False
    >>> m.weight.requires_grad
    True
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
