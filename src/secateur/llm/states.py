"""What the block-by-block engine carries between blocks: calibration micro-batches and their hidden states.

Calibration rows are grouped into micro-batches of at most ``TOKENS`` tokens (or ``batch_size`` sequences),
so one block's activations are bounded whatever the calibration size. The hidden states at a block
boundary live in a :class:`Store`: in memory for a single micro-batch, otherwise one temporary file per
micro-batch, so 128 x 2048 calibration tokens hold no more memory than 8 x 2048 (the disk holds the rest).
"""

from __future__ import annotations

import contextlib
import inspect
import os
from dataclasses import dataclass

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import PruningError
from ..inputs import Batch, Inputs

TOKENS = 4096  # tokens per micro-batch when batch_size is None


class Stop(Exception):
    """Raised by a hook to end a forward pass early."""


@dataclass
class State:
    """One micro-batch at the entry of the current block: the block's other arguments, which token
    positions are real (None: all), how many tokens and sequences it holds, and the dtype its forwards
    run in under autocast (None: no autocast); its hidden states are in a Store."""

    args: tuple
    kwargs: dict
    tokens: torch.Tensor | None = None
    count: int = 0
    rows: int = 1
    autocast: torch.dtype | None = None

    def select(self, start: int, stop: int) -> State:
        """Sequences ``start:stop`` of this micro-batch (tensor arguments with a batch dimension sliced)."""
        def part(v: object) -> object:
            return v[start:stop] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == self.rows > 1 else v

        tokens = None if self.tokens is None else self.tokens[start:stop]
        count = (stop - start) * self.count // self.rows if tokens is None else int(tokens.sum())
        return State(tuple(part(a) for a in self.args), {k: part(v) for k, v in self.kwargs.items()}, tokens, count,
                     stop - start, self.autocast)


class Store:
    """The hidden states of every micro-batch at one block boundary, in memory or spilled to ``folder``.

    >>> store = Store(None)
    >>> store.put(0, torch.ones(2))
    >>> store.get(0).tolist()
    [1.0, 1.0]
    """

    def __init__(self, folder: str | None) -> None:
        self.folder = folder
        self.memory: dict[int, torch.Tensor] = {}
        self.width = 0  # the hidden size (the last dimension) of what was put
        if folder:
            os.makedirs(folder, exist_ok=True)

    def put(self, index: int, hidden: torch.Tensor) -> None:
        self.width = hidden.shape[-1]
        if self.folder is None:
            self.memory[index] = hidden
        else:
            save_file({"h": hidden.detach().contiguous().cpu()}, self._path(index))

    def get(self, index: int, device: torch.device | str = "cpu") -> torch.Tensor:
        if self.folder is None:
            return self.memory[index].to(device)
        return load_file(self._path(index))["h"].to(device)

    def _path(self, index: int) -> str:
        return os.path.join(self.folder, f"{index}.safetensors")


def rows_per_batch(rows: list[Batch], size: int | None) -> int | None:
    """Sequences per micro-batch: ``size``, or as many as hold at most ``TOKENS`` tokens (at least one)."""
    if size is not None or not rows:
        return size
    length = max(r.inputs.kwargs["input_ids"].shape[-1] for r in rows)
    return max(1, TOKENS // length)


def micro_batches(rows: list[Batch], size: int | None) -> list[Batch]:
    """Consecutive rows of equal length stacked, at most ``size`` rows each (None: as many as fit)."""
    out: list[list[Batch]] = []
    for row in rows:
        last = out[-1] if out else None
        if (last and _shape_key(last[0]) == _shape_key(row) and (size is None or len(last) < size)
                and len(row.inputs.kwargs["input_ids"]) == 1):
            last.append(row)
        else:
            out.append([row])
    return [Batch(Inputs((), {k: torch.cat([r.inputs.kwargs[k] for r in g]) for k in g[0].inputs.kwargs}))
            for g in out]


def _shape_key(row: Batch) -> tuple:
    return tuple((k, tuple(v.shape[1:])) for k, v in row.inputs.kwargs.items())


def forward_kwargs(model: nn.Module) -> dict:
    params = inspect.signature(model.forward).parameters
    return {"use_cache": False} if "use_cache" in params else {}


def first_block_states(model: nn.Module, block: nn.Module, batches: list[Batch], store: Store,
                       autocast: torch.dtype | None = None) -> list[State]:
    """What the first block receives for each micro-batch; the hidden states go to ``store``."""
    states, extra = [], forward_kwargs(model)
    device = next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))

    def hook(_, args, kwargs):
        seen.update(args=args, kwargs=kwargs)
        raise Stop

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for i, batch in enumerate(batches):
            seen: dict = {}
            try:
                model(**{k: v.to(device) for k, v in batch.inputs.kwargs.items()}, **extra)
            except Stop:
                pass
            if "args" not in seen:
                raise PruningError("the model never called its first block; is a calibration batch empty?")
            args, kwargs = seen["args"], seen["kwargs"]
            hidden = args[0] if args else kwargs.pop("hidden_states")
            store.put(i, hidden)
            mask = batch.inputs.kwargs.get("attention_mask")
            tokens = None if mask is None else mask.bool().to(device)
            count = hidden.shape[:-1].numel() if tokens is None else int(tokens.sum())
            states.append(State(tuple(args[1:]), kwargs, tokens, count, hidden.shape[0], autocast))
    finally:
        handle.remove()
    return states


def call_block(block: nn.Module, hidden: torch.Tensor, state: State) -> torch.Tensor:
    """The block's output on ``hidden`` (under autocast in ``state.autocast``), in ``hidden``'s dtype."""
    with contextlib.nullcontext() if state.autocast is None else \
            torch.autocast(hidden.device.type, state.autocast, cache_enabled=False):  # weights change mid-pass
        out = block(hidden, *state.args, **state.kwargs)
    return (out[0] if isinstance(out, tuple) else out).to(hidden.dtype)


def layer_tokens(x: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
    """A layer's input as ``(tokens, features)`` float32, padding positions left out."""
    return (x[tokens] if tokens is not None and tokens.shape == x.shape[:-1] else x).reshape(-1, x.shape[-1]).float()


class Discard(Store):
    """A store that keeps nothing (outputs a pass computes but nobody reads)."""

    def __init__(self) -> None:
        super().__init__(None)

    def put(self, index: int, hidden: torch.Tensor) -> None:
        self.width = hidden.shape[-1]
