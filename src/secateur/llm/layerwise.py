"""The layer-by-layer calibration engine for one-shot pruning of transformers.

The inputs of the first block are captured on the calibration batch; then each block runs once over
the whole batch. A pre-hook on each Linear sees that layer's complete calibration input, computes
its statistic (``||X_j||`` for Wanda, ``H = 2 X^T X / n`` for SparseGPT), prunes the weight and lets
the forward continue, so later layers of the block (o_proj after q/k/v, down after up/gate) are
scored on the outputs of already-pruned layers, and the block's output, the next block's input, is
the pruned one. The weights replaced go to a temporary file (put back if anything fails), so peak memory is the model,
one block's activations on the calibration batch, and the statistics of one layer.
"""

from __future__ import annotations

import fnmatch
import tempfile
import time
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..depth import block_stacks
from ..errors import PruningError
from ..progress import progress_bar
from ..transaction import eval_mode
from .methods import (
    Magnitude,
    SparseGPT,
    Wanda,
    _OneShot,
    inverse_hessian_factor,
    magnitude_prune,
    sparsegpt_prune,
    wanda_prune,
)


@dataclass
class LayerwiseReport:
    """Achieved sparsity of every pruned weight, and the time taken."""

    sparsity: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


class _Stop(Exception):
    """Raised by the capture hook once the first block's inputs are in hand."""


def decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The longest stack of identical blocks (a transformer's layers)."""
    stacks = block_stacks(model)
    if not stacks:
        raise PruningError("layer-by-layer pruning needs a stack of identical blocks (an nn.ModuleList of layers)")
    return max(stacks.items(), key=lambda kv: len(kv[1]))


def first_block_inputs(model: nn.Module, block: nn.Module, batch: torch.Tensor) -> tuple[tuple, dict]:
    """The positional and keyword arguments the first block receives for ``batch`` (token ids)."""
    seen: dict = {}

    def hook(_, args, kwargs):
        seen["args"], seen["kwargs"] = args, kwargs
        raise _Stop

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model(input_ids=batch, use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    if "args" not in seen:
        raise PruningError("the model never called its first block; is the calibration batch empty?")
    return seen["args"], seen["kwargs"]


def _weight(module: nn.Module) -> torch.Tensor:
    """A (out, in) view of the weight: Hugging Face's Conv1D stores (in, out)."""
    return module.weight.detach().T if hasattr(module, "nf") else module.weight.detach()


def _prune_one(module: nn.Module, x: torch.Tensor | None, method: _OneShot, shared: dict | None = None
               ) -> torch.Tensor:
    """The pruned weight of one layer; ``shared`` caches per-input statistics (q/k/v read one input)."""
    w = _weight(module).float()
    if isinstance(method, Magnitude):
        new = magnitude_prune(w, method)
    else:
        cache = shared if shared is not None else {}
        if cache.get("input") is not x:  # holding the tensor keeps its identity from being reused
            flat = x.reshape(-1, x.shape[-1]).float()
            stat = (torch.linalg.vector_norm(flat, dim=0) if isinstance(method, Wanda)
                    else inverse_hessian_factor(flat.T @ flat * (2 / flat.shape[0]), method.dampening))
            cache.update(input=x, stat=stat)
        new = (wanda_prune(w, cache["stat"], method) if isinstance(method, Wanda)
               else sparsegpt_prune(w, None, method, factor=cache["stat"]))
    return (new.T if hasattr(module, "nf") else new).to(module.weight.dtype).contiguous()


def _linears(block: nn.Module, prefix: str, ignore: tuple[str, ...]) -> dict[str, nn.Module]:
    found = {}
    for name, m in block.named_modules():
        full = f"{prefix}.{name}"
        if (isinstance(m, nn.Linear) or hasattr(m, "nf")) and not any(fnmatch.fnmatch(full, p) for p in ignore):
            found[full] = m
    return found


def prune_layerwise(model: nn.Module, method: Magnitude | Wanda | SparseGPT, calibration: torch.Tensor,
                    progress: bool = True) -> LayerwiseReport:
    """Prune every Linear of every block of ``model`` with ``method``, calibrating on ``calibration``
    (token ids, ``(sequences, length)``). In place; on failure the model is left as it was."""
    if calibration.dim() != 2:
        raise PruningError("calibration must be token ids shaped (sequences, length), e.g. windows(ids, 512, 32)")
    report, start = LayerwiseReport(), time.perf_counter()
    with _Undo() as undo:

        def replace(full: str, module: nn.Module, new: torch.Tensor) -> None:
            undo.keep(module, module.weight)
            module.weight = nn.Parameter(new, requires_grad=module.weight.requires_grad)
            report.sparsity[full] = float((new == 0).float().mean())

        if isinstance(method, Magnitude):  # weights only: no forward pass needed
            prefix, blocks = decoder_layers(model)
            for i, block in enumerate(progress_bar(list(blocks), "Magnitude", enabled=progress)):
                for full, module in _linears(block, f"{prefix}.{i}", method.ignore).items():
                    replace(full, module, _prune_one(module, None, method))
        else:
            shared: dict = {}  # statistics of the latest input, reused by layers that read it too

            def prune_block(name: str, block: nn.Module) -> list:
                def hook(mod, inputs, full):
                    replace(full, mod, _prune_one(mod, inputs[0], method, shared))

                return [module.register_forward_pre_hook(lambda mod, inputs, full=full: hook(mod, inputs, full))
                        for full, module in _linears(block, name, method.ignore).items()]

            run_blocks(model, calibration, prune_block, label=type(method).__name__, progress=progress)
    report.seconds = time.perf_counter() - start
    return report


class _Undo:
    """Keeps the weights pruning replaced in a temporary file, not in memory, and puts them back if
    anything fails (so the model is left as it was without holding a second copy of its weights)."""

    def __enter__(self) -> _Undo:
        self._dir = tempfile.TemporaryDirectory(prefix="secateur-undo-")
        self._kept: list[tuple[nn.Module, str, bool]] = []
        return self

    def keep(self, module: nn.Module, weight: torch.Tensor) -> None:
        path = f"{self._dir.name}/{len(self._kept)}.safetensors"
        save_file({"w": weight.detach().contiguous()}, path)
        self._kept.append((module, path, weight.requires_grad))

    def __exit__(self, kind, error, tb) -> None:
        try:
            if error is not None:
                for module, path, grad in reversed(self._kept):
                    module.weight = nn.Parameter(load_file(path)["w"], requires_grad=grad)
        finally:
            self._dir.cleanup()


def run_blocks(model: nn.Module, calibration: torch.Tensor, before_block=None, label: str = "blocks",
               progress: bool = False) -> torch.Tensor:
    """Run the model block by block over the whole calibration batch, calling ``before_block(name, block)``
    (which returns hooks to remove afterwards) before each block; returns the last block's output."""
    prefix, blocks = decoder_layers(model)
    with eval_mode(model), torch.no_grad():
        args, kwargs = first_block_inputs(model, blocks[0], calibration)
        hidden = args[0]
        for i, block in enumerate(progress_bar(list(blocks), label, enabled=progress)):
            hooks = before_block(f"{prefix}.{i}", block) if before_block else []
            try:
                out = block(hidden, *args[1:], **kwargs)
            finally:
                for h in hooks:
                    h.remove()
            hidden = out[0] if isinstance(out, tuple) else out
    return hidden
