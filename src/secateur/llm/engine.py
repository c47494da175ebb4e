"""The block-by-block engine that runs every one-shot method (``secateur.methods.OneShot``).

Calibration rows are grouped into micro-batches; the first block's inputs are captured for each. Then,
block by block, the Linear layers are taken in *stages*: layers that read one input (q/k/v, gate/up)
form a stage, in the order the block calls them. A stage's statistic streams over every micro-batch
(the block's forward stops right after the stage), the stage is pruned, and the next stage sees the
pruned outputs (o_proj is scored on pruned q/k/v, down_proj on pruned gate/up). A last pass gives
the block's outputs, the next block's inputs. With one micro-batch all of this is a single pass: each
layer is pruned in a pre-hook as the forward reaches it. Memory: the model, one block's activations
for one micro-batch, the hidden states between blocks, and one statistic per stage.

Weights are updated in place (an optimizer made before keeps working) and masked, so fine-tuning
keeps the sparsity; the values replaced go to a temporary file and come back if anything fails.
"""

from __future__ import annotations

import inspect
import tempfile
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..depth import block_stacks
from ..errors import PruningError
from ..inputs import Batch, Inputs, token_rows
from ..masks import apply_mask
from ..methods import OneShot
from ..methods.base import match
from ..plan import Plan
from ..progress import progress_bar
from ..results import Outcome
from ..surgery import stored


class _Stop(Exception):
    """Raised by a hook to end a forward pass early."""


@dataclass
class State:
    """One micro-batch at the entry of the current block: hidden states, the block's other arguments,
    and which token positions are real (None: all)."""

    hidden: torch.Tensor
    args: tuple
    kwargs: dict
    tokens: torch.Tensor | None = None


@dataclass
class Layer:
    """A prunable Linear (or GPT-2 Conv1D) of the current block."""

    name: str
    module: nn.Module


@dataclass
class Run:
    """Bookkeeping of one engine run: the plan being built and the weights to restore on failure."""

    method: OneShot
    plan: Plan = field(default_factory=Plan)
    spill: str = ""
    replaced: list[tuple[torch.Tensor, str]] = field(default_factory=list)


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The longest stack of identical blocks (a transformer's layers)."""
    stacks = block_stacks(model)
    if not stacks:
        raise PruningError("one-shot pruning needs a stack of identical blocks (an nn.ModuleList of layers)")
    return max(stacks.items(), key=lambda kv: len(kv[1]))


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


def _forward_kwargs(model: nn.Module) -> dict:
    params = inspect.signature(model.forward).parameters
    return {"use_cache": False} if "use_cache" in params else {}


def first_block_states(model: nn.Module, block: nn.Module, batches: list[Batch]) -> list[State]:
    """What the first block receives for each micro-batch."""
    states, extra = [], _forward_kwargs(model)

    def hook(_, args, kwargs):
        seen.update(args=args, kwargs=kwargs)
        raise _Stop

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in batches:
            seen: dict = {}
            try:
                model(**batch.inputs.kwargs, **extra)
            except _Stop:
                pass
            if "args" not in seen:
                raise PruningError("the model never called its first block; is a calibration batch empty?")
            args, kwargs = seen["args"], seen["kwargs"]
            hidden = args[0] if args else kwargs.pop("hidden_states")
            mask = batch.inputs.kwargs.get("attention_mask")
            states.append(State(hidden, tuple(args[1:]), kwargs, None if mask is None else mask.bool()))
    finally:
        handle.remove()
    return states


def block_layers(block: nn.Module, prefix: str, ignore: tuple[str, ...]) -> tuple[list[Layer], dict[str, str]]:
    """The block's prunable layers, and those its ignore patterns skip."""
    layers, skipped = [], {}
    for name, m in block.named_modules():
        full = f"{prefix}.{name}"
        if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D":
            if match(full, ignore):
                skipped[full] = "matches ignore="
            else:
                layers.append(Layer(full, m))
    return layers, skipped


def _call(block: nn.Module, state: State) -> torch.Tensor:
    out = block(state.hidden, *state.args, **state.kwargs)
    return out[0] if isinstance(out, tuple) else out


def _stages(block: nn.Module, layers: list[Layer], state: State) -> list[list[Layer]]:
    """Layers grouped by the input they read, in the order the block calls them."""
    order: list[tuple[Layer, torch.Tensor]] = []  # the inputs themselves: ids of freed tensors get reused
    hooks = [layer.module.register_forward_pre_hook(lambda _, a, layer=layer: order.append((layer, a[0])))
             for layer in layers]
    try:
        with torch.no_grad():
            _call(block, state)
    finally:
        for h in hooks:
            h.remove()
    stages: list[list[Layer]] = []
    last: torch.Tensor | None = None
    for layer, x in dict((lay.name, (lay, x)) for lay, x in order).values():
        if x is not last:
            stages.append([])
            last = x
        stages[-1].append(layer)
    return stages


def _tokens(x: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
    return (x[tokens] if tokens is not None and tokens.shape == x.shape[:-1] else x).reshape(-1, x.shape[-1]).float()


def _weight(module: nn.Module) -> torch.Tensor:
    """The effective weight as ``(out, in)`` float32 (GPT-2's Conv1D stores ``(in, out)``)."""
    w = module.weight.detach()
    return (w.T if type(module).__name__ == "Conv1D" else w).float()


def prune_layer(run: Run, layer: Layer, statistic: object) -> None:
    """Replace ``layer``'s weight by the method's update, in place, and mask it."""
    sparsity = run.method.layer_sparsity(layer.name)
    new, keep = run.method.prune_weight(_weight(layer.module), statistic, sparsity)
    if type(layer.module).__name__ == "Conv1D":
        new, keep = new.T, keep.T
    param = stored(layer.module, "weight")
    path = f"{run.spill}/{len(run.replaced)}.safetensors"
    save_file({"w": param.detach().contiguous().cpu()}, path)
    run.replaced.append((param, path))
    with torch.no_grad():
        param.copy_(new.to(param.dtype))
    apply_mask(layer.module, keep)
    run.plan.masks[f"{layer.name}.weight"] = keep.detach().clone()


def _prune_in_forward(run: Run, block: nn.Module, layers: list[Layer], state: State) -> None:
    """One micro-batch: prune each layer in a pre-hook, as the forward reaches it with its whole input."""
    latest: dict = {"input": None, "statistic": None}  # layers that read one input (q/k/v) share its statistic

    def hook(layer: Layer, x: torch.Tensor) -> None:
        if latest["input"] is not x:
            latest.update(input=x, statistic=run.method.new_statistic(x.shape[-1]))
            latest["statistic"].update(_tokens(x, state.tokens))
        prune_layer(run, layer, latest["statistic"])

    hooks = [lay.module.register_forward_pre_hook(lambda _, a, lay=lay: hook(lay, a[0])) for lay in layers]
    try:
        _call(block, state)
    finally:
        for h in hooks:
            h.remove()


def _prune_stage(run: Run, block: nn.Module, stage: list[Layer], states: list[State]) -> None:
    """Stream one stage's statistic over every micro-batch (stopping the forward after the stage)."""
    first, last = stage[0], stage[-1]
    statistic = run.method.new_statistic(_weight(first.module).shape[1])

    def stop(*_):
        raise _Stop

    for state in states:
        hooks = [first.module.register_forward_pre_hook(
                     lambda _, a, s=state: statistic.update(_tokens(a[0], s.tokens))),
                 last.module.register_forward_hook(stop)]
        try:
            _call(block, state)
        except _Stop:
            pass
        finally:
            for h in hooks:
                h.remove()
    for layer in stage:
        prune_layer(run, layer, statistic)


def prune_block(run: Run, block: nn.Module, layers: list[Layer], states: list[State]) -> list[State]:
    """Prune one block's layers; return the next block's inputs."""
    if run.method.new_statistic(1) is None:
        for layer in layers:
            prune_layer(run, layer, None)
    elif len(states) == 1:
        _prune_in_forward(run, block, layers, states[0])
    else:
        for stage in _stages(block, layers, states[0]):
            _prune_stage(run, block, stage, states)
    return [State(_call(block, s), s.args, s.kwargs, s.tokens) for s in states] if states else []


def _restore(run: Run) -> None:
    with torch.no_grad():
        for param, path in reversed(run.replaced):
            param.copy_(load_file(path)["w"].to(param.device))


def run_oneshot(model: nn.Module, method: OneShot, calibration: object, progress: bool = True) -> Outcome:
    """Prune every Linear of every block of ``model`` with ``method`` (in place; a failure restores the
    weights, and ``prune``'s transaction the rest)."""
    needs_data = method.new_statistic(1) is not None
    if needs_data and calibration is None:
        raise PruningError(f"{type(method).__name__} needs calibration= token ids: a (sequences, length) tensor, a "
                           "list of (1, length) tensors, or tokenizer batches")
    prefix, blocks = decoder_layers(model)
    run, skipped = Run(method), {}
    with tempfile.TemporaryDirectory(prefix="secateur-undo-") as spill, torch.no_grad():
        run.spill = spill
        try:
            rows = list(token_rows(calibration)) if needs_data else []
            states = first_block_states(model, blocks[0], micro_batches(rows, method.batch_size)) if rows else []
            for i, block in enumerate(progress_bar(list(blocks), method.name, enabled=progress)):
                layers, ignored = block_layers(block, f"{prefix}.{i}", method.ignore)
                skipped |= ignored
                states = prune_block(run, block, layers, states)
        except BaseException:
            _restore(run)
            raise
    return Outcome(run.plan, groups=[n.removesuffix(".weight") for n in run.plan.masks], skipped=skipped)
