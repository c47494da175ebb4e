"""One-shot pruning of a model larger than memory, block by block from its safetensors shards.

``prune_checkpoint(folder, out, method, calibration)`` builds the model without weights (accelerate's
``init_empty_weights``), loads the tensors outside the decoder blocks (embeddings, final norm, head),
then for each block: reads its tensors from the shards (memory-mapped, closed right after) in the
compute ``dtype`` onto ``device``, prunes it with the engine ``sc.prune`` uses, writes it to its own
output shard in the checkpoint's dtype and lets it go. Memory holds the tensors outside the blocks,
one block and one block's calibration activations; on a GPU only one block is on the device at a time.
The output is a Hugging Face checkpoint (``from_pretrained`` loads it) written under a temporary name
and renamed when complete, so a failure leaves nothing half-written; the source is never changed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from ..errors import InvalidParameterError, ModelFileError
from ..methods import OneShot
from .blocks import decoder_layers
from .engine import Run, block_profile, run_blocks

INDEX = "model.safetensors.index.json"


@dataclass
class CheckpointResult:
    """What ``prune_checkpoint`` did: the method, the sparsity reached per layer and asked per block,
    layers skipped, the wall time and the seconds each block took (load, prune, save)."""

    method: OneShot
    out: Path
    sparsity: dict[str, float]
    profile: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    block_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"method": self.method.to_dict(), "out": str(self.out), "sparsity": self.sparsity,
                "profile": self.profile, "skipped": self.skipped, "seconds": self.seconds,
                "block_seconds": self.block_seconds}


def tensor_files(folder: Path) -> dict[str, Path]:
    """Every tensor name of a checkpoint folder and the shard that holds it."""
    if (folder / INDEX).is_file():
        weight_map = json.loads((folder / INDEX).read_text())["weight_map"]
        return {name: folder / file for name, file in weight_map.items()}
    single = folder / "model.safetensors"
    if not single.is_file():
        raise ModelFileError(f"{folder} holds neither {INDEX} nor model.safetensors; give a Hugging Face checkpoint "
                             "saved as safetensors")
    with safe_open(single, framework="pt") as f:
        return dict.fromkeys(f.keys(), single)


def read(files: dict[str, Path], names: list[str], device: torch.device | str = "cpu",
         dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The named tensors, each shard opened (memory-mapped) only while read; floating tensors cast to ``dtype``."""
    by_file: dict[Path, list[str]] = defaultdict(list)
    for name in names:
        by_file[files[name]].append(name)
    out = {}
    for path, group in by_file.items():
        with safe_open(path, framework="pt") as f:
            for name in group:
                t = f.get_tensor(name)
                out[name] = t.to(device, dtype if dtype is not None and t.is_floating_point() else t.dtype)
    return out


class ShardFiles:
    """Block ``i``'s tensors in and out: read from the source shards, written to ``model-<i+1>-of-<n>``."""

    def __init__(self, files: dict[str, Path], prefix: str, out: Path, count: int, device, dtype) -> None:
        self.files, self.prefix, self.out, self.count = files, prefix, out, count
        self.device, self.dtype = device, dtype
        self.weight_map: dict[str, str] = {}
        self.size = 0
        self.started = 0.0
        self.seconds: list[float] = []

    def names(self, index: int) -> list[str]:
        head = f"{self.prefix}.{index}."
        return [n for n in self.files if n.startswith(head)]

    def load(self, index: int, block: nn.Module) -> None:
        self.started = time.perf_counter()
        head = f"{self.prefix}.{index}."
        tensors = read(self.files, self.names(index), self.device, self.dtype)
        block.load_state_dict({n.removeprefix(head): t for n, t in tensors.items()}, assign=True)

    def save(self, index: int, block: nn.Module) -> None:
        head = f"{self.prefix}.{index}."
        dtypes = self.source_dtypes(self.names(index))
        tensors = {head + k: v.detach().to("cpu", dtypes[head + k]).contiguous() for k, v in block.state_dict().items()}
        self.write(f"model-{index + 1:05d}-of-{self.count:05d}.safetensors", tensors)
        self.seconds.append(time.perf_counter() - self.started)

    def free(self, index: int, block: nn.Module) -> None:
        block.to("meta")

    def source_dtypes(self, names: list[str]) -> dict[str, torch.dtype]:
        by_file: dict[Path, list[str]] = defaultdict(list)
        for name in names:
            by_file[self.files[name]].append(name)
        out = {}
        for path, group in by_file.items():
            with safe_open(path, framework="pt") as f:
                out |= {name: f.get_slice(name).get_dtype() for name in group}
        return {name: _DTYPES[d] for name, d in out.items()}

    def write(self, file: str, tensors: dict[str, torch.Tensor]) -> None:
        save_file(tensors, self.out / file, metadata={"format": "pt"})
        self.weight_map |= dict.fromkeys(tensors, file)
        self.size += sum(t.numel() * t.element_size() for t in tensors.values())

    def finish(self, source: Path, outside: list[str], report: dict) -> None:
        """The tensors outside the blocks (unchanged), the index, the source's other files and ``prune.json``."""
        self.write(f"model-{self.count:05d}-of-{self.count:05d}.safetensors", read(self.files, outside))
        index = {"metadata": {"total_size": self.size}, "weight_map": dict(sorted(self.weight_map.items()))}
        (self.out / INDEX).write_text(json.dumps(index, indent=1))
        for item in source.iterdir():
            if item.is_file() and not item.name.endswith(".safetensors") and item.name != INDEX:
                shutil.copy2(item, self.out / item.name)
        (self.out / "prune.json").write_text(json.dumps(report, indent=1))


_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
           "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def empty_model(folder: Path) -> nn.Module:
    """The checkpoint's model with every parameter on the meta device (buffers real)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    with init_empty_weights(include_buffers=False):
        return AutoModelForCausalLM.from_config(config).eval()


def prune_checkpoint(folder: str | os.PathLike, out: str | os.PathLike, method: OneShot, calibration: object,
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                     progress: bool = True) -> CheckpointResult:
    """Prune a Hugging Face causal LM checkpoint (safetensors) block by block into a new folder ``out``,
    never holding more than one block: for models whose weights do not fit in memory.

    >>> import tempfile, torch, secateur as sc
    >>> from secateur.zoo.hf import llama
    >>> src, dst = tempfile.mkdtemp(), tempfile.mkdtemp() + "/pruned"
    >>> llama().save_pretrained(src)
    >>> result = prune_checkpoint(src, dst, sc.Wanda(0.5), torch.randint(0, 100, (2, 16)), progress=False)
    >>> sorted(set(result.sparsity.values()))
    [0.5]
    """
    folder, out = Path(folder), Path(out)
    if not isinstance(method, OneShot):
        raise InvalidParameterError(f"prune_checkpoint takes a one-shot method (Wanda, SparseGPT, ...), not "
                                    f"{type(method).__name__}")
    if out.exists():
        raise ModelFileError(f"{out} already exists; give a new folder for the pruned checkpoint")
    start = time.perf_counter()
    files = tensor_files(folder)
    model = empty_model(folder)
    prefix, blocks = decoder_layers(model)
    outside = [n for n in files if not n.startswith(prefix + ".")]
    model.load_state_dict(read(files, outside, device, dtype), strict=False, assign=True)
    model.tie_weights()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    shards = ShardFiles(files, prefix, partial, len(blocks) + 1, device, dtype)
    run = Run(method, record=False)
    try:
        with tempfile.TemporaryDirectory(prefix="secateur-") as scratch, torch.no_grad():
            run_blocks(run, model, calibration, scratch, progress, shards)
        result = CheckpointResult(method, out, run.sparsity, block_profile(run.method, prefix, blocks), run.skipped,
                                  time.perf_counter() - start, shards.seconds)
        shards.finish(folder, outside, result.to_dict())
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return result
