"""Pruning one block as forwards over its micro-batches reach its layers.

Every forward calls the block's layers in the same order. When a forward reaches a layer (a pre-hook):
- the layer is already pruned: nothing to do;
- it reads the very tensor the previous layer read (k and v after q, up after gate): the previous
  layer's statistic is complete, so the layer is pruned with it at once;
- otherwise the layer starts a new *stage*: the forward adds its input to a fresh statistic and waits
  until every micro-batch has done the same; then the layer is pruned and the forwards go on.
So o_proj is scored on the outputs of pruned q/k/v, and down_proj on those of pruned gate/up.

Two schedules carry this out, with equal results (torch.equal):
- ``lockstep`` (one pass per block): each micro-batch's forward is a greenlet of the calling thread, run
  in turn; a forward waiting at a stage keeps its live tensors (the residual stream and the stage input),
  so memory grows with the calibration set but the block is computed once. Greenlets, not threads: each
  thread allocates from its own malloc arena, which kept what that thread's forward freed, and giving it
  back at every hand-over cost a quarter of the time (SmolLM2-135M, 32 x 512 tokens: Wanda 44 -> 35 s,
  SparseGPT 65 -> 53 s, results equal);
- ``staged``: micro-batches one after the other; a forward that reaches a new stage adds its input and
  stops; once all have, the layer is pruned and the forwards start again. Memory holds one micro-batch;
  the block costs one partial pass per stage plus the pass that gives its outputs.
"""

from __future__ import annotations

import contextvars
import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from greenlet import greenlet
from torch import nn

from ..errors import PruningError
from .blocks import Layer, exact
from .states import State, Stop, Store, call_block, layer_tokens


@dataclass
class Forward:
    """One forward over one micro-batch: its state and the input the last layer it reached read."""

    state: State
    last: torch.Tensor | None = None


FORWARD: contextvars.ContextVar[Forward] = contextvars.ContextVar("forward")  # each greenlet has its own


@dataclass
class BlockPruner:
    """The per-layer logic the schedules share. ``prune(layer, statistic)`` replaces a layer's weight;
    ``new_statistic(in_features)`` makes a streaming statistic."""

    layers: list[Layer]
    prune: Callable[[Layer, object], None]
    new_statistic: Callable[[int], object]
    done: set[int] = field(default_factory=set)  # id(module) of the layers pruned
    open: tuple[Layer, object] | None = None  # the stage being gathered
    closed: object = None  # the statistic of the last stage pruned, for the layers that read its input too

    def reached(self, layer: Layer, x: torch.Tensor, wait: Callable[[Forward], None]) -> None:
        """The current forward reached ``layer`` with input ``x``; ``wait`` holds it at a new stage."""
        forward = FORWARD.get()
        if id(layer.module) not in self.done:
            if forward.last is x:  # the previous layer read x: its stage just closed, before any other opened
                self._prune(layer, self.closed)
            else:
                if self.open is None or self.open[0] is not layer:
                    self.closed = None  # no layer reads an earlier stage's input again: its statistic can go
                    self.open = (layer, self.new_statistic(x.shape[-1]))
                with exact(x):
                    self.open[1].update(layer_tokens(x, forward.state.tokens))
                wait(forward)
        forward.last = x

    def close(self) -> None:
        """Every forward has added its input to the open stage: prune its layer."""
        layer, self.closed = self.open
        self.open = None
        self._prune(layer, self.closed)

    def _prune(self, layer: Layer, statistic: object) -> None:
        self.prune(layer, statistic)
        self.done.add(id(layer.module))

    def hooks(self, wait: Callable[[Forward], None]) -> list:
        """Pre-hooks on the layers (removed by the schedule); ``wait`` is passed rather than kept, so the
        pruner refers to no closure over itself and its statistics go when the block ends, not at the
        cycle collector's next pass (a 7B block's Hessians and factors are about 1.4 GB)."""
        return [lay.module.register_forward_pre_hook(lambda _, a, lay=lay: self.reached(lay, a[0], wait))
                for lay in self.layers]

    def run(self, forward: Forward, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        token = FORWARD.set(forward)
        try:
            return call_block(block, hidden, forward.state)
        finally:
            FORWARD.reset(token)  # the forward holds the last layer input it saw: not past the pass


def staged(pruner: BlockPruner, block: nn.Module, states: list[State], source: Store, sink: Store,
           device: torch.device) -> None:
    """Micro-batches one after the other, a partial pass per stage; the last pass fills ``sink``."""

    def wait(_: Forward) -> None:
        raise Stop

    handles = pruner.hooks(wait)
    try:
        while True:
            stopped = 0
            for i, state in enumerate(states):
                try:
                    sink.put(i, pruner.run(Forward(state), block, source.get(i, device)))
                except Stop:
                    stopped += 1
            if not stopped:
                return
            if stopped != len(states):
                raise PruningError("micro-batches took different paths through a block; use batch_size=None")
            pruner.close()
    finally:
        for h in handles:
            h.remove()


def lockstep(pruner: BlockPruner, block: nn.Module, states: list[State], source: Store, sink: Store,
             device: torch.device) -> None:
    """One greenlet per micro-batch, all in the calling thread, run in turn until each waits at the open
    stage; then the stage's layer is pruned and the next round starts: one pass. Each greenlet keeps its
    own grad and autocast settings across a switch (a block may open ``torch.autocast`` around a layer)."""
    hub, kind = greenlet.getcurrent(), device.type

    def job(i: int) -> None:
        sink.put(i, pruner.run(Forward(states[i]), block, source.get(i, device)))

    def switch(to: Callable[[], object]) -> object:
        settings = Settings.now(kind)
        try:
            return to()
        finally:
            settings.restore(kind)

    live = [greenlet(lambda i=i: job(i)) for i in range(len(states))]
    handles, start = pruner.hooks(lambda _: switch(hub.switch)), resident()
    try:
        while live:
            live = [g for g in live if (switch(g.switch), not g.dead)[1]]
            if live and len(live) != len(states):
                raise PruningError("micro-batches took different paths through a block; use batch_size=None")
            if live:
                if resident() > start + SLACK:
                    release_freed()
                pruner.close()
    finally:
        for g in live:
            if not g.dead:
                switch(g.throw)  # GreenletExit: unwind a forward still waiting
        for h in handles:
            h.remove()


@dataclass
class Settings:
    """The thread-local torch settings a forward may change for a while: grad mode and autocast. Greenlets
    share their thread's, so each forward's are put back when it resumes."""

    grad: bool
    autocast: bool
    dtype: torch.dtype
    cache: bool

    @classmethod
    def now(cls, kind: str) -> Settings:
        return cls(torch.is_grad_enabled(), torch.is_autocast_enabled(kind), torch.get_autocast_dtype(kind),
                   torch.is_autocast_cache_enabled())

    def restore(self, kind: str) -> None:
        torch.set_grad_enabled(self.grad)
        torch.set_autocast_enabled(kind, self.autocast)
        torch.set_autocast_dtype(kind, self.dtype)
        torch.set_autocast_cache_enabled(self.cache)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):  # not glibc
        return None


_TRIM = _malloc_trim()


SLACK = 256 * 2**20  # memory the one-pass schedule may keep in freed chunks before it gives them back
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident() -> int:
    """The process's resident memory in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        return 0


def release_freed() -> None:
    """Give the memory the forwards freed back to the system: glibc keeps freed chunks in its heap, where
    tensors allocated later between them pin it (``malloc_trim`` returns every free page; a no-op where the
    C library has none). The engine calls it after each block, and ``lockstep`` at a stage once the
    process holds ``SLACK`` more than when the block began (a trim at every stage cost 3 s of Wanda's 35
    on SmolLM2-135M, 32 x 512 tokens; none at all let the peak reach +577 MB, the model being 513)."""
    if _TRIM is not None:
        _TRIM(0)
