"""Save and load pruned models: safetensors weights plus a JSON manifest. Loading never unpickles.

A model with no masks and no mostly-zero weight is written as plain ``model.safetensors`` (the
names Hugging Face and safetensors expect). Otherwise the weights go to ``secateur.safetensors`` in
the exact sparse encoding of ``compress.py`` (a name ``from_pretrained`` does not pick up, so a
folder never pretends to be a checkpoint whose weights it cannot read). The manifest records every
plan applied to the model; ``load`` replays them on a fresh instance of the original architecture,
checks every shape against the file, loads the weights and restores the masks.
"""

from __future__ import annotations

import copy
import hashlib
import json
import lzma
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load as tensors_from_bytes
from safetensors.torch import save as tensors_to_bytes
from torch import nn

from . import __version__
from .adapters import config_changes
from .compress import Mode, decode, encode
from .errors import InvalidParameterError, ModelFileError
from .masks import apply_mask, find_mask
from .plan import Plan, apply, history, record
from .surgery import owner, per_group, sync_module_attributes, tensor_owners
from .transaction import atomic

FORMAT = "secateur.v2"
PLAIN, ENCODED, MANIFEST = "model.safetensors", "secateur.safetensors", "manifest.json"


def _state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, torch.Tensor]]:
    """Effective weights (masks folded in), shared tensors once: (tensors, tied aliases, masks by name)."""
    masks = {f"{n}.weight" if n else "weight": find_mask(m).mask for n, m in model.named_modules()
             if find_mask(m) is not None}
    state = {k: v for k, v in model.state_dict().items() if "parametrizations." not in k}
    for name in masks:
        state[name] = owner(model, name)[0].weight.detach()
    tensors, tied, seen = {}, {}, {}
    for name, t in state.items():
        key = (t.data_ptr(), t.shape, t.dtype) if t.numel() else None
        if key is not None and key in seen:
            tied[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        tensors[name] = t.detach().contiguous().cpu()
    return tensors, tied, masks


def _encoded(tensors: dict, masks: dict, compress: Mode) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    stored, metas = {}, {}
    for name, t in tensors.items():
        parts, metas[name] = encode(name, t, compress, masks.get(name))
        stored.update(parts)
    return stored, metas


def _write(path: Path, data: bytes) -> dict:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _plans(model: nn.Module, plan: Plan | None) -> list[Plan]:
    plans = history(model)
    if plan is not None and not any(p is plan for p in plans):
        plans.append(plan)
    return plans


def save(model: nn.Module, directory: str | os.PathLike, plan: Plan | None = None, metadata: dict | None = None,
         compress: Mode = "auto", entropy: bool = False) -> Path:
    """Write ``model`` to ``directory``: weights, ``manifest.json`` (with every plan applied to the model)
    and, for Hugging Face models, ``config.json``. The model is not changed.

    ``compress="auto"`` keeps masked and mostly-zero weights as bitmask + values (exact) and writes a
    dense model as plain safetensors; ``"int8"`` also quantizes weights per output row. ``entropy``
    LZMA-codes the weights file. ``plan`` adds a plan the model's history lacks (e.g. for a copy).

    >>> save(nn.Linear(2, 2), "/tmp/secateur-doc").name
    'secateur-doc'
    """
    if compress not in ("auto", "int8"):
        raise InvalidParameterError(f"compress={compress!r} is not 'auto' or 'int8'")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, tied, masks = _state(model)
    stored, metas = _encoded(tensors, masks, compress)
    plain = all(m["encoding"] == "dense" or m["encoding"] == "plain" for m in metas.values())
    name = (PLAIN if plain else ENCODED) + (".xz" if entropy else "")
    payload = tensors_to_bytes(tensors if plain else stored, metadata={"format": "pt"})
    files = {name: _write(directory / name, lzma.compress(payload) if entropy else payload)}
    changes, unexpressed = config_changes(model)
    config = getattr(model, "config", None)
    if hasattr(config, "save_pretrained"):
        config = copy.deepcopy(config) if changes else config
        for key, value in changes.items():
            setattr(config, key, value)
        config.save_pretrained(directory)
    manifest = {
        "format": FORMAT, "secateur_version": __version__, "model_class": type(model).__qualname__,
        "weights": name, "files": files, "tensors": {} if plain else metas, "tied": tied, "masked": sorted(masks),
        "plans": [p.to_dict() for p in _plans(model, plan)], "metadata": metadata or {},
        "hf_config": {"complete": not unexpressed, "unexpressed": unexpressed} if config is not None else None,
    }
    for stale in {PLAIN, ENCODED, PLAIN + ".xz", ENCODED + ".xz"} - {name}:
        (directory / stale).unlink(missing_ok=True)
    _write(directory / MANIFEST, json.dumps(manifest, indent=1).encode())
    return directory


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of a saved model, with a clear error when the folder is not one."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ModelFileError(f"{directory} holds no saved model (no {MANIFEST}); write one with "
                             "secateur.save(model, directory)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{path} is not valid JSON ({err}); the folder is damaged") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ModelFileError(f"{path} has format {found!r}; this secateur reads {FORMAT!r}")
    return manifest


def read_weights(directory: str | os.PathLike, manifest: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """The saved tensors by name, decoded, and the kept positions of each bitmask-stored tensor."""
    name = str(manifest.get("weights", ""))
    path = Path(directory) / name
    if name not in (PLAIN, ENCODED, PLAIN + ".xz", ENCODED + ".xz") or not path.is_file():
        raise ModelFileError(f"{path} is missing or not a secateur weights file; the folder was not fully written")
    raw = path.read_bytes()
    expected = (manifest.get("files") or {}).get(name, {})
    if expected.get("sha256") not in (None, hashlib.sha256(raw).hexdigest()):
        raise ModelFileError(f"{path} does not match the SHA-256 in the manifest: the file is damaged or from "
                             "another save")
    stored = tensors_from_bytes(lzma.decompress(raw) if name.endswith(".xz") else raw)
    metas = manifest.get("tensors") or {}
    if not metas:
        return stored, {}
    tensors, positions = {}, {}
    for key, meta in metas.items():
        tensors[key], kept = decode(key, stored, meta)
        if kept is not None:
            positions[key] = kept
    return tensors, positions


def _resize_to(model: nn.Module, owners: dict, name: str, shape: list[int], dtype: torch.dtype) -> None:
    """Give tensor ``name`` (and every module that shares it) an empty tensor of the saved shape."""
    module, leaf = owner(model, name)
    old = getattr(module, leaf, None)
    if old is None or list(old.shape) == shape:
        return
    new = torch.empty(shape, dtype=dtype, device=old.device)
    if leaf in module._parameters:
        new = nn.Parameter(new, requires_grad=old.requires_grad)
    for holder, attr in owners[id(old)]:
        groups = per_group(holder)
        (holder._parameters if attr in holder._parameters else holder._buffers)[attr] = new
        sync_module_attributes(holder, groups)


def _fit(model: nn.Module, tensors: dict[str, torch.Tensor], replayed: bool, directory: Path) -> None:
    """After the plans: every saved tensor must fit its slot (resized here only when no plan was recorded)."""
    current = {k: v for k, v in model.state_dict().items() if "parametrizations." not in k}
    wrong = {k: (tuple(current[k].shape), tuple(t.shape)) for k, t in tensors.items()
             if k in current and current[k].shape != t.shape}
    if wrong and replayed:
        name, (have, saved) = next(iter(wrong.items()))
        raise ModelFileError(f"{directory}: after replaying its plans, {name} is {have} but the file holds {saved}; "
                             "pass the original architecture as base=")
    owners = tensor_owners(model)
    for name in wrong:
        _resize_to(model, owners, name, list(tensors[name].shape), tensors[name].dtype)


def _base(base: nn.Module | Callable[[], nn.Module] | str | os.PathLike) -> nn.Module:
    if isinstance(base, nn.Module):
        return base
    if isinstance(base, str | os.PathLike):
        from .resolve import hf_factory

        return hf_factory(base)()
    return base()


def load(directory: str | os.PathLike, base: nn.Module | Callable[[], nn.Module] | str | os.PathLike,
         masks: bool = True) -> nn.Module:
    """Rebuild a saved (pruned) model on ``base``: a fresh module, a class / factory that makes one, or
    the folder of the original Hugging Face model. Recorded plans are replayed (blocks, cuts, config),
    weights loaded, and with ``masks=True`` masked weights get their masks back (zeros stay zero
    through further fine-tuning). If anything fails, a ``base`` instance is left as it was.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    tensors, positions = read_weights(directory, manifest)
    plans = [Plan.from_dict(p) for p in manifest.get("plans", [])]
    model = _base(base)
    with atomic(model):
        for plan in plans:
            apply(model, plan, remember=False)
        _fit(model, tensors, bool(plans), directory)
        result = model.load_state_dict(tensors, strict=False)
        missing = {k for k in result.missing_keys if "parametrizations." not in k} - set(manifest.get("tied", {}))
        if missing or result.unexpected_keys:
            raise ModelFileError(f"{directory} does not fit {type(model).__name__}: missing {sorted(missing)[:5]}, "
                                 f"unexpected {sorted(result.unexpected_keys)[:5]}; pass the original architecture")
        for name in manifest.get("masked", []) if masks else []:
            module, leaf = owner(model, name)
            apply_mask(module, positions.get(name, getattr(module, leaf).detach() != 0), leaf)
    for plan in plans:
        record(model, plan)
    return model
