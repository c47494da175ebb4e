"""Pruning one block as forwards over its micro-batches reach its layers.

Every forward calls the block's layers in the same order. When a forward reaches a layer (a pre-hook):
- the layer is already pruned: nothing to do;
- it reads the very tensor the previous layer read (k and v after q, up after gate): the previous
  layer's statistic is complete, so the layer is pruned with it at once;
- otherwise the layer starts a new *stage*: the forward adds its input to a fresh statistic and waits
  until every micro-batch has done the same; then the layer is pruned and the forwards go on.
So o_proj is scored on the outputs of pruned q/k/v, and down_proj on those of pruned gate/up.

Two schedules carry this out, with equal results (torch.equal):
- ``lockstep`` (one pass per block): each micro-batch's forward runs in its own thread, one thread at a
  time in turn; a forward waiting at a stage keeps its live tensors (the residual stream and the stage
  input), so memory grows with the calibration set but the block is computed once. Each thread's
  allocations come from its own malloc arena, which keeps what the forward freed (glibc serves tensors
  under 32 MB from arenas once one such tensor was freed): a thread hands over its turn only after
  ``release_freed`` gave those pages back (SmolLM2-135M, 32 x 512 tokens, Wanda: +1.7 GB -> +0.35 GB);
- ``staged``: micro-batches one after the other; a forward that reaches a new stage adds its input and
  stops; once all have, the layer is pruned and the forwards start again. Memory holds one micro-batch;
  the block costs one partial pass per stage plus the pass that gives its outputs.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import PruningError
from .blocks import Layer
from .states import State, Stop, Store, call_block, layer_tokens


class Aborted(Exception):
    """Ends a waiting forward when another one failed."""


@dataclass
class Forward:
    """One forward over one micro-batch: its state and the input the last layer it reached read."""

    index: int
    state: State
    last: torch.Tensor | None = None


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
    local: threading.local = field(default_factory=threading.local)

    def reached(self, layer: Layer, x: torch.Tensor, wait: Callable[[Forward], None]) -> None:
        """The current forward reached ``layer`` with input ``x``; ``wait`` holds it at a new stage."""
        forward: Forward = self.local.forward
        if id(layer.module) not in self.done:
            if forward.last is x:  # the previous layer read x: its stage just closed, before any other opened
                self._prune(layer, self.closed)
            else:
                if self.open is None or self.open[0] is not layer:
                    self.closed = None  # no layer reads an earlier stage's input again: its statistic can go
                    self.open = (layer, self.new_statistic(x.shape[-1]))
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
        self.local.forward = forward
        return call_block(block, hidden, forward.state)


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
                    sink.put(i, pruner.run(Forward(i, state), block, source.get(i, device)))
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
    """One thread per micro-batch, one running at a time, all meeting at every stage: one pass."""
    turns = Turns(len(states))

    def job(i: int) -> None:
        sink.put(i, pruner.run(Forward(i, states[i]), block, source.get(i, device)))

    handles = pruner.hooks(lambda forward: turns.barrier(forward.index, pruner.close))
    try:
        turns.run(job)
    finally:
        for h in handles:
            h.remove()


class Turns:
    """Runs ``count`` jobs in threads, one at a time, in turn; ``barrier`` holds each job until all
    have reached it, and the last to arrive runs ``on_last`` first. Any failure ends every job."""

    def __init__(self, count: int) -> None:
        self.cond = threading.Condition()
        self.live = list(range(count))
        self.turn = 0
        self.arrived = 0
        self.failure: BaseException | None = None

    def run(self, job: Callable[[int], None]) -> None:
        threads = [threading.Thread(target=self._job, args=(i, job), daemon=True) for i in self.live]
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        except BaseException as err:  # an interrupt in the main thread
            self._fail(err)
            for t in threads:
                t.join()
        if self.failure is not None:
            raise self.failure

    def barrier(self, index: int, on_last: Callable[[], None]) -> None:
        release_freed()
        with self.cond:
            self.arrived += 1
            if self.arrived == len(self.live):
                self.arrived = 0
                try:
                    on_last()
                except BaseException as err:
                    self.failure = self.failure or err
                    self.cond.notify_all()
                    raise Aborted from None
                self.turn = self.live[0]
            else:
                self.turn = self.live[self.live.index(index) + 1]
            self.cond.notify_all()
            self._wait_turn(index)

    def _job(self, index: int, job: Callable[[int], None]) -> None:
        try:
            with self.cond:
                self._wait_turn(index)
            with torch.no_grad():
                job(index)
        except Aborted:
            pass
        except BaseException as err:
            self._fail(err)
        finally:
            release_freed()
            with self.cond:
                position = self.live.index(index)
                self.live.remove(index)
                if self.arrived and self.failure is None:
                    self.failure = PruningError("micro-batches took different paths through a block; use "
                                                "batch_size=None")
                if self.live:
                    self.turn = self.live[position % len(self.live)]
                self.cond.notify_all()

    def _wait_turn(self, index: int) -> None:
        self.cond.wait_for(lambda: self.turn == index or self.failure is not None)
        if self.failure is not None:
            raise Aborted

    def _fail(self, err: BaseException) -> None:
        with self.cond:
            self.failure = self.failure or err
            self.cond.notify_all()


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError, TypeError):  # not glibc
        return None


_TRIM = _malloc_trim()


def release_freed() -> None:
    """Give the memory that the current thread's forward freed back to the system: glibc's ``malloc_trim``
    returns every free page of every arena (a no-op where the C library has none). Without it the four
    micro-batch threads of a 32 x 512 SmolLM2 calibration keep the activations they freed (+1.7 GB)."""
    if _TRIM is not None:
        _TRIM(0)
