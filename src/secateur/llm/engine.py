"""The block-by-block engine that runs every one-shot method (``secateur.methods.OneShot``).

Calibration rows become micro-batches (``llm/states.py``); the first block's inputs are captured for
each. Then, block by block, the block's Linear layers are pruned as forwards over the micro-batches
reach them (``llm/passes.py``: layers that read one input share one streaming statistic, and each
stage is scored on the outputs of the stages already pruned). The block's outputs on every
micro-batch are the next block's inputs. A non-uniform ``profile`` (OWL, block sensitivity) is measured
first in one dense pass (``llm/measure.py``); a ``reconstruct`` option tunes each pruned block's kept
weights towards the dense block's outputs before they move on (``methods/reconstruction.py``).

Memory: the model, one block's activations for one micro-batch (plus, in one-pass mode, each
micro-batch's live tensors at a stage boundary), one statistic per stage, and the hidden states
between blocks, which go to a temporary file per micro-batch when there are several. Weights are
updated in place (an optimizer made before keeps working) and masked, so fine-tuning keeps the
sparsity; the values replaced go to a temporary file and come back if anything fails.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import PruningError
from ..inputs import token_rows
from ..masks import apply_mask
from ..methods import OneShot
from ..plan import Plan
from ..progress import progress_bar
from ..results import Outcome
from ..surgery import stored
from .blocks import Layer, block_layers, decoder_layers, device_of, exact, in_features, is_conv1d, weight_of
from .measure import resolve_profile
from .passes import BlockPruner, lockstep, release_freed, staged
from .states import Discard, State, Store, call_block, first_block_states, micro_batches, rows_per_batch

HELD_BYTES = 512 * 2**20  # one pass per block while the micro-batches' live tensors fit in this

__all__ = ["Run", "Stream", "decoder_layers", "prune_block", "prune_layer", "run_blocks", "run_oneshot"]


@dataclass
class Run:
    """Bookkeeping of one engine run: the plan being built, the sparsity reached per layer and the
    weights to restore on failure. ``record``: keep every mask in the plan (not for a model streamed from
    files, whose masks would not fit in memory); ``undo``: a folder for the replaced weights (None: no
    rollback, for models pruned from files, which are never changed)."""

    method: OneShot
    plan: Plan = field(default_factory=Plan)
    undo: str | None = None
    record: bool = True
    replaced: list[tuple[torch.Tensor, str]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    sparsity: dict[str, float] = field(default_factory=dict)
    unmasked: list[tuple[nn.Module, torch.Tensor]] = field(default_factory=list)  # pruned, mask not yet applied

    def mask(self) -> None:
        """Hold the sparsity of the layers pruned so far with masks (once their block is done: a masked
        layer multiplies its weight by the mask on every forward)."""
        for module, keep in self.unmasked:
            apply_mask(module, keep)
        self.unmasked.clear()
    losses: list[tuple[float, float]] = field(default_factory=list)  # reconstruction: first and last epoch


@dataclass
class Stream:
    """The calibration set at the current block boundary: each micro-batch's state, and their hidden
    states in a Store (spilled under ``folder`` when there are several micro-batches)."""

    states: list[State]
    store: Store
    folder: str | None
    generation: int = 0
    dense: Store | None = None  # the dense model's hidden states (reconstruction towards the dense model)

    def next_store(self, name: str = "h") -> Store:
        """An empty store for the outputs (``name``: a scratch store, e.g. ``t`` for targets)."""
        if self.folder is None:
            return Store(None)
        self.generation += 1
        return Store(os.path.join(self.folder, f"{name}{self.generation}"))

    @property
    def tokens(self) -> int:
        return sum(s.count for s in self.states)


def prune_layer(run: Run, layer: Layer, statistic: object) -> None:
    """Replace ``layer``'s weight by the method's update, in place (``run.mask()`` masks it later)."""
    sparsity = run.method.layer_sparsity(layer.name)
    with exact(layer.module.weight):
        new, keep = run.method.prune_weight(weight_of(layer.module), statistic, sparsity)
    if is_conv1d(layer.module):
        new, keep = new.T, keep.T
    param = stored(layer.module, "weight")
    if run.undo is not None:
        path = os.path.join(run.undo, f"{len(run.replaced)}.safetensors")
        save_file({"w": param.detach().contiguous().cpu()}, path)
        run.replaced.append((param, path))
    with torch.no_grad():
        param.copy_(new.to(param.dtype))
    keep = keep.to(param.device).contiguous()
    run.sparsity[layer.name] = 1 - float(keep.float().mean())
    run.unmasked.append((layer.module, keep))
    if run.record:
        run.plan.masks[f"{layer.name}.weight"] = keep


def one_pass_fits(stream: Stream, layers: list[Layer]) -> bool:
    """Whether every micro-batch's live tensors at a stage boundary (the residual stream, the block's
    input and the widest layer input, in float32) fit in ``HELD_BYTES``."""
    hidden = stream.store.width
    widest = max((in_features(layer.module) for layer in layers), default=hidden)
    return len(stream.states) == 1 or stream.tokens * 4 * (2 * hidden + widest) <= HELD_BYTES


def forward_block(block: nn.Module, stream: Stream, sink: Store, source: Store | None = None) -> None:
    """The block's outputs on every micro-batch (of ``source``, by default the stream's), into ``sink``."""
    device, source = device_of(block), source or stream.store
    for i, state in enumerate(stream.states):
        sink.put(i, call_block(block, source.get(i, device), state))


def prune_block(run: Run, block: nn.Module, layers: list[Layer], stream: Stream) -> None:
    """Prune one block's layers and move ``stream`` on to the block's outputs."""
    method = run.method
    targets = None
    if method.reconstruct is not None and (layers or method.reconstruct.target == "model"):
        if stream.dense is None and method.reconstruct.target == "model":
            stream.dense = stream.store  # the first block: the dense model's inputs are the stream's
        targets = stream.next_store("t")
        forward_block(block, stream, targets, stream.dense if method.reconstruct.target == "model" else None)
    sink = stream.next_store() if targets is None else Discard()
    pruner = BlockPruner(layers, lambda layer, stat: prune_layer(run, layer, stat), method.new_statistic)
    if method.new_statistic(1) is None:
        for layer in layers:
            pruner.prune(layer, None)
        if targets is None:
            forward_block(block, stream, sink)
    else:
        schedule = lockstep if one_pass_fits(stream, layers) else staged
        schedule(pruner, block, stream.states, stream.store, sink, device_of(block))
        run.skipped |= {lay.name: "never called by the block's forward" for lay in layers
                        if id(lay.module) not in pruner.done}
    run.mask()
    if targets is not None:
        if layers:
            reconstruct(run, block, layers, stream, targets)
        sink = stream.next_store()
        forward_block(block, stream, sink)
        stream.dense = targets if method.reconstruct.target == "model" else None
    stream.store = sink


def reconstruct(run: Run, block: nn.Module, layers: list[Layer], stream: Stream, targets: Store) -> None:
    """Tune the pruned layers' kept weights so the block's outputs approach ``targets`` (EBFT), in steps of
    ``reconstruct.batch_size`` sequences."""
    device = device_of(block)
    params = [stored(layer.module, "weight") for layer in layers]
    frozen = [p for p in params if not p.requires_grad]
    rows = run.method.reconstruct.batch_size

    def step(i: int, start: int):
        def outputs() -> tuple[torch.Tensor, torch.Tensor]:
            state = stream.states[i].select(start, start + rows)
            hidden = stream.store.get(i, device)[start : start + rows]
            out, target = call_block(block, hidden, state), targets.get(i, device)[start : start + rows]
            return (out, target) if state.tokens is None else (out[state.tokens], target[state.tokens])
        return outputs

    steps = [step(i, start) for i, s in enumerate(stream.states) for start in range(0, s.rows, rows)]
    for p in frozen:
        p.requires_grad_(True)
    try:
        run.losses.append(run.method.reconstruct.fit(params, steps))
    finally:
        for p in frozen:
            p.requires_grad_(False)


def open_stream(model: nn.Module, first: nn.Module, method: OneShot, calibration: object,
                folder: str) -> Stream:
    """The calibration set at the first block; spilled under ``folder`` when it holds several micro-batches."""
    rows = list(token_rows(calibration))
    batches = micro_batches(rows, rows_per_batch(rows, method.batch_size))
    spill = folder if len(batches) > 1 else None
    store = Store(os.path.join(spill, "h0") if spill else None)
    autocast = None if method.autocast is None else getattr(torch, method.autocast)
    return Stream(first_block_states(model, first, batches, store, autocast), store, spill)


def needs_data(method: OneShot) -> bool:
    return (method.new_statistic(1) is not None or method.reconstruct is not None
            or (method.profile is not None and not isinstance(method.profile, dict)))


def block_profile(method: OneShot, prefix: str, blocks: nn.ModuleList) -> dict[str, float]:
    """The sparsity asked of each block: its layers' sparsities weighted by their sizes."""
    out = {}
    for i, block in enumerate(blocks):
        layers, _ = block_layers(block, f"{prefix}.{i}", method.ignore)
        sizes = [lay.module.weight.numel() for lay in layers]
        if sizes:
            asked = sum(n * method.layer_sparsity(lay.name) for n, lay in zip(sizes, layers, strict=True))
            out[f"{prefix}.{i}"] = asked / sum(sizes)
    return out


def check_pattern(method: OneShot, prefix: str, blocks: nn.ModuleList) -> None:
    """Refuse, before anything is pruned, an N:M pattern that does not divide every layer's inputs."""
    if method.nm is None:
        return
    m = method.nm[1]
    bad = [(lay.name, in_features(lay.module)) for i, block in enumerate(blocks)
           for lay in block_layers(block, f"{prefix}.{i}", method.ignore)[0] if in_features(lay.module) % m]
    if bad:
        name, width = bad[0]
        raise PruningError(f"pattern {method.nm[0]}:{m} groups each layer's inputs by {m}, so their number must be a "
                           f"multiple of {m}; {len(bad)} layers' is not (e.g. {name}: {width}); choose another M or "
                           "leave those layers out with ignore=[...]")


class BlockFiles(Protocol):
    """Where blocks live when the model does not fit in memory: ``load`` fills block ``i``'s tensors,
    ``save`` writes them, ``free`` lets them go (see ``llm/shards.py``)."""

    def load(self, index: int, block: nn.Module) -> None: ...

    def save(self, index: int, block: nn.Module) -> None: ...

    def free(self, index: int, block: nn.Module) -> None: ...


def run_blocks(run: Run, model: nn.Module, calibration: object, folder: str, progress: bool,
               files: BlockFiles | None = None) -> None:
    """Measure the profile if the method asks for one, then prune block by block (each loaded from and
    saved to ``files`` when given)."""
    method = run.method
    prefix, blocks = decoder_layers(model)
    check_pattern(method, prefix, blocks)

    def stream(name: str) -> Stream | None:
        return open_stream(model, blocks[0], method, calibration, os.path.join(folder, name)) \
            if needs_data(method) else None

    enter = (lambda i: files.load(i, blocks[i])) if files else (lambda i: None)
    release = (lambda i: files.free(i, blocks[i])) if files else (lambda i: None)
    profile = resolve_profile(method, stream, prefix, blocks, enter, release, progress,
                              None if files else model, calibration)
    if profile is not None:
        run.method = replace(method, profile=profile)
        release_freed()  # what the profile's pass and search freed, before the pruning allocates
    calibrated = stream("states")
    for i in progress_bar(range(len(blocks)), method.name, enabled=progress):
        enter(i)
        layers, ignored = block_layers(blocks[i], f"{prefix}.{i}", method.ignore)
        run.skipped |= ignored
        if calibrated is None:
            for layer in layers:
                prune_layer(run, layer, None)
            run.mask()
        else:
            prune_block(run, blocks[i], layers, calibrated)
        if files:
            files.save(i, blocks[i])
        release(i)
        release_freed()


def run_oneshot(model: nn.Module, method: OneShot, calibration: object, progress: bool = True) -> Outcome:
    """Prune every Linear of every block of ``model`` with ``method`` (in place; a failure restores the
    weights, and ``prune``'s transaction the rest)."""
    if needs_data(method) and calibration is None:
        raise PruningError(f"{type(method).__name__} needs calibration= token ids: a (sequences, length) tensor, a "
                           "list of (1, length) tensors, or tokenizer batches")
    prefix, blocks = decoder_layers(model)
    run = Run(method)
    with tempfile.TemporaryDirectory(prefix="secateur-") as folder, torch.no_grad():
        run.undo = os.path.join(folder, "undo")
        os.makedirs(run.undo)
        try:
            run_blocks(run, model, calibration, folder, progress)
        except BaseException:
            _restore(run)
            raise
    return Outcome(run.plan, groups=[n.removesuffix(".weight") for n in run.plan.masks], skipped=run.skipped,
                   profile=block_profile(run.method, prefix, blocks))


def _restore(run: Run) -> None:
    with torch.no_grad():
        for param, path in reversed(run.replaced):
            param.copy_(load_file(path)["w"].to(param.device))
