"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint holds the model's full state, its masks (``mask.<module>``, re-applied on load, so a run
resumed on a fresh model keeps its sparsity), the optimizer's state, the learning-rate scheduler's
state and the loop's own counters, written atomically each epoch.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .masks import apply_mask, find_mask, masked_modules

TENSORS, META = "checkpoint.safetensors", "checkpoint.json"


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().contiguous().clone()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(directory: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: object, loop: dict, best: dict[str, torch.Tensor] | None = None) -> None:
    """Write the training state into ``directory`` (tensors first, the JSON that marks it complete last);
    ``best`` is the best epoch's model state so far, if any."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    tensors |= {f"best.{k}": v.detach().contiguous().clone() for k, v in (best or {}).items()}
    tensors |= {f"mask.{name}": find_mask(m).mask.contiguous().clone() for name, m in masked_modules(model).items()}
    optim_tensors, optim_meta = _split_optimizer(optimizer.state_dict())
    tmp = directory / f".{TENSORS}.tmp"
    save_file({**tensors, **optim_tensors}, str(tmp))
    os.replace(tmp, directory / TENSORS)
    meta = {"optimizer": optim_meta, "scheduler": scheduler.state_dict(), "loop": loop}
    tmp = directory / f".{META}.tmp"
    tmp.write_text(json.dumps(meta))
    os.replace(tmp, directory / META)


def load_checkpoint(directory: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: object) -> tuple[dict, dict[str, torch.Tensor] | None] | None:
    """Restore a checkpoint written by :func:`save_checkpoint`: (loop counters, best state or None)."""
    directory = Path(directory)
    if not (directory / META).is_file():
        return None
    meta = json.loads((directory / META).read_text())
    tensors = load_file(str(directory / TENSORS))
    for key, mask in tensors.items():
        if key.startswith("mask."):
            apply_mask(model.get_submodule(key[5:]), mask.to(next(model.parameters()).device))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_join_optimizer(tensors, meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    return meta["loop"], best or None
