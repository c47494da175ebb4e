"""Training checkpoints without pickle, written and read as one unit.

One file, ``checkpoint.safetensors``: the model's state, its masks (``mask.<module>``, re-applied on load,
so a run resumed on a fresh model keeps its sparsity), the optimizer's tensors and the best state so far
as tensors; the optimizer's other state, the scheduler's state, the loop's counters and
a SHA-256 of every tensor as JSON in the file's metadata. It is written under a unique temporary name
and renamed over the previous one (under the folder's lock), so a checkpoint is the old one or the new
one, never the weights of one epoch with the counters of another. ``load_checkpoint`` validates all of
it (digest, tensor names and shapes against the model and optimizer, hyper-parameters against this run,
counters against their types and ranges) before touching the model, and restores the model exactly if
loading still fails.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import secrets
import types
import typing
from pathlib import Path

import torch
from safetensors.torch import save as tensors_to_bytes
from torch import nn

from .errors import CheckpointError, SecateurError
from .io.fs import FolderLock, remove_file, rename, write_file, writing
from .io.state import parse_tensors
from .masks import apply_mask, find_mask, masked_modules
from .transaction import restored_data

FILE, FORMAT = "checkpoint.safetensors", "secateur.checkpoint.v2"
_SCHEDULE_COUNTERS = ("last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step", "_is_initial")


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _split_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for idx, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value.detach().contiguous().clone()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_checkpoint(directory: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: object, loop: dict, best: dict[str, torch.Tensor] | None = None) -> None:
    """Write the training state into ``directory`` as one file, atomically; ``best`` is the best epoch's
    model state so far, if any."""
    directory = Path(directory)
    with writing(directory):
        directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    tensors |= {f"best.{k}": v.detach().contiguous().clone() for k, v in (best or {}).items()}
    tensors |= {f"mask.{name}": find_mask(m).mask.contiguous().clone() for name, m in masked_modules(model).items()}
    optim_tensors, optim_meta = _split_optimizer(optimizer.state_dict())
    tensors |= optim_tensors
    meta = {"format": FORMAT, "sha256": digest(tensors), "optimizer": optim_meta,
            "scheduler": scheduler.state_dict(), "loop": loop}
    data = tensors_to_bytes(tensors, metadata={"secateur": json.dumps(meta)})
    with writing(directory), FolderLock(directory):
        for stale in directory.glob(f".{FILE}.*.tmp"):  # left by a run that was killed while writing
            remove_file(stale)
        tmp = directory / f".{FILE}.{secrets.token_hex(4)}.tmp"
        write_file(tmp, data)
        rename(tmp, directory / FILE)


def _header(raw: bytes, where: str) -> dict:
    size = int.from_bytes(raw[:8], "little") if len(raw) >= 8 else -1
    if not 0 < size <= len(raw) - 8:
        raise CheckpointError(f"{where} is not a safetensors file; the checkpoint is damaged")
    try:
        meta = json.loads(json.loads(raw[8 : 8 + size])["__metadata__"]["secateur"])
    except (ValueError, KeyError, TypeError, RecursionError):
        raise CheckpointError(f"{where} holds no secateur training state; it is damaged or not a checkpoint "
                              "written by this secateur (delete it to start over)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not a {FORMAT} checkpoint; delete it to start over")
    return meta


def _fits(value: object, hint: object) -> bool:
    """Strict JSON type check: int, float, bool, str, None, list[...], dict[...] and unions of them."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is list:
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return isinstance(value, hint) if isinstance(hint, type) else False


def _kind(hint: object) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_kind(a) for a in args)
    if origin is list:
        return f"a list of ({_kind(args[0])})"
    if origin is dict:
        return f"a mapping of ({_kind(args[0])}) to ({_kind(args[1])})"
    names = {int: "an integer >= 0", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    return names.get(hint, str(hint))


def check_loop(loop: object, loop_type: type, epochs: int | None, where: str) -> dict:
    """The loop counters, if every field of ``loop_type`` is there with its type (ints non-negative) and
    the epoch does not pass ``epochs``."""
    hints = typing.get_type_hints(loop_type)
    fields = {f.name for f in dataclasses.fields(loop_type)}
    if not isinstance(loop, dict) or set(loop) != fields:
        raise CheckpointError(f"{where}: the loop counters are not {sorted(fields)}; delete the checkpoint to "
                              "start over")
    for name in sorted(fields):
        if not _fits(loop[name], hints[name]):
            raise CheckpointError(f"{where}: loop counter {name}={repr(loop[name])[:40]} is not "
                                  f"{_kind(hints[name])}; the checkpoint is damaged")
    if epochs is not None and isinstance(loop.get("epoch"), int) and loop["epoch"] > epochs:
        raise CheckpointError(f"{where} is at epoch {loop['epoch']}, past the {epochs} epochs asked for; resume with "
                              f"epochs >= {loop['epoch']} or delete the checkpoint")
    return loop


def _check_groups(saved: object, optimizer: torch.optim.Optimizer, where: str) -> None:
    """The saved parameter groups must have this run's hyper-parameters; lr only as scheduled (0..initial)."""
    current = optimizer.param_groups
    if not isinstance(saved, list) or len(saved) != len(current):
        raise CheckpointError(f"{where}: the optimizer has {len(current)} parameter groups, the checkpoint another "
                              "number; it was written by a different run")
    for group, now in zip(saved, current, strict=True):
        if not isinstance(group, dict) or set(group) != set(now) or len(group["params"]) != len(now["params"]):
            raise CheckpointError(f"{where}: the optimizer's parameter groups do not match this run's")
        for key, value in now.items():
            if key not in ("params", "lr") and group[key] != (list(value) if isinstance(value, tuple) else value):
                raise CheckpointError(f"{where} was made with {key}={group[key]!r}, this run uses {value!r}; resume "
                                      "with the same settings or delete the checkpoint")
        lr, top = group["lr"], now.get("initial_lr", now["lr"])
        if not isinstance(lr, int | float) or isinstance(lr, bool) or not math.isfinite(lr) or not 0 <= lr <= top:
            raise CheckpointError(f"{where}: lr={repr(lr)[:20]} is not a learning rate this run's schedule reaches "
                                  f"(0 to {top}); the checkpoint is damaged")


def _check_tensors(tensors: dict[str, torch.Tensor], model: nn.Module, optimizer: torch.optim.Optimizer,
                   where: str) -> None:
    state = model.state_dict()
    saved = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    for kind, found in (("model", saved), ("best", best)):
        if (found or kind == "model") and (set(found) != set(state) or any(
                found[k].shape != state[k].shape or found[k].dtype != state[k].dtype for k in state)):
            raise CheckpointError(f"{where}: its {kind} tensors do not fit {type(model).__name__} (names, shapes or "
                                  "dtypes differ); it was written for another model")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for name, t in tensors.items():
        if name.startswith("optim."):
            _, idx, _key = (name.split(".", 2) + ["", ""])[:3]
            if not idx.isdigit() or int(idx) >= len(params) or (t.dim() and t.shape != params[int(idx)].shape):
                raise CheckpointError(f"{where}: optimizer state {name} does not fit this model's parameters")
        elif name.startswith("mask."):
            _check_mask(model, name[5:], t, where)
        elif not name.startswith(("model.", "best.")):
            raise CheckpointError(f"{where}: unexpected tensor {name!r}")


def _check_mask(model: nn.Module, name: str, mask: torch.Tensor, where: str) -> None:
    weight = getattr(model.get_submodule(name), "weight", None) if _has_module(model, name) else None
    if mask.dtype != torch.bool or not isinstance(weight, torch.Tensor) or weight.shape != mask.shape:
        raise CheckpointError(f"{where}: mask {name!r} does not fit a weight of this model; it was written for "
                              "another model")


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _check_scheduler(saved: object, scheduler: object, where: str) -> None:
    fresh = scheduler.state_dict()
    if not isinstance(saved, dict) or set(saved) != set(fresh):
        raise CheckpointError(f"{where}: the learning-rate schedule state does not match this run's scheduler")
    for key, value in fresh.items():
        if key not in _SCHEDULE_COUNTERS and saved[key] != (list(value) if isinstance(value, tuple) else value):
            raise CheckpointError(f"{where} was made with a schedule whose {key}={str(saved[key])[:40]!r}, this run "
                                  f"has {value!r}; resume with the same settings or delete the checkpoint")
    if not isinstance(saved.get("last_epoch"), int) or not -1 <= saved["last_epoch"] < 1 << 31:
        raise CheckpointError(f"{where}: the schedule's step counter is damaged")


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict, where: str) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    scalars = meta.get("scalars")
    if not isinstance(scalars, dict):
        raise CheckpointError(f"{where}: the optimizer's scalar state is damaged")
    for name, value in scalars.items():
        idx, _, key = str(name).partition(".")
        if not idx.isdigit() or not isinstance(value, int | float | bool) or (
                isinstance(value, float) and not math.isfinite(value)):
            raise CheckpointError(f"{where}: optimizer state {str(name)[:40]!r} is damaged")
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def load_checkpoint(directory: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: object, loop_type: type | None = None, epochs: int | None = None
                    ) -> tuple[dict, dict[str, torch.Tensor] | None] | None:
    """Restore a checkpoint written by :func:`save_checkpoint`: (loop counters, best state or None), or None
    when ``directory`` holds none. Everything is validated first (``loop_type``: the dataclass of the
    counters, ``epochs``: the most the run goes to); a :class:`CheckpointError` leaves the model as it was."""
    path = Path(directory) / FILE
    if not path.is_file() or path.is_symlink():
        if (Path(directory) / "checkpoint.json").is_file():
            raise CheckpointError(f"{directory} holds a checkpoint of an older secateur (checkpoint.json); delete it "
                                  "to start over")
        return None
    where = str(path)
    raw = path.read_bytes()
    meta = _header(raw, where)
    tensors = parse_tensors(raw, where)
    if meta.get("sha256") != digest(tensors):
        raise CheckpointError(f"{where}: its tensors do not match the SHA-256 it records; the file is damaged")
    optim = meta.get("optimizer")
    if not isinstance(optim, dict):
        raise CheckpointError(f"{where}: the optimizer state is damaged")
    loop = check_loop(meta.get("loop"), loop_type, epochs, where) if loop_type else meta.get("loop")
    _check_tensors(tensors, model, optimizer, where)
    _check_groups(optim.get("param_groups"), optimizer, where)
    _check_scheduler(meta.get("scheduler"), scheduler, where)
    joined = _join_optimizer(tensors, optim, where)
    with restored_data(model):
        try:
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            optimizer.load_state_dict(joined)
            scheduler.load_state_dict(meta["scheduler"])
            for name, mask in tensors.items():
                if name.startswith("mask."):
                    module = model.get_submodule(name[5:])
                    apply_mask(module, mask.to(module.weight.device))
        except SecateurError:
            raise
        except Exception as err:  # whatever torch rejects: the checkpoint does not fit this run
            raise CheckpointError(f"{where} does not fit this run ({type(err).__name__}: {str(err)[:160]})") from None
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    return loop, best or None
