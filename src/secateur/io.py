"""Save and load pruned models: safetensors weights plus a JSON manifest. Loading never unpickles.

``load`` rebuilds pruned shapes on a fresh instance of the original architecture by resizing every
tensor whose saved shape differs, fixing the size attributes of its module, then loading weights.
"""

from __future__ import annotations

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
from .adapters import sync_attention, update_config
from .compress import Mode, decode, encode
from .depth import remove_blocks
from .errors import ModelFileError
from .masks import apply_mask, masked_modules
from .plan import Plan, per_group, sync_module_attributes, tensor_owners

FORMAT = "secateur.v1"
WEIGHTS, MANIFEST = "model.safetensors", "manifest.json"


def _plain_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """Weights with masks folded in, shared tensors stored once: (tensors, tied aliases, masked names)."""
    masked = [f"{n}.weight" if n else "weight" for n in masked_modules(model)]
    state = {k: v for k, v in model.state_dict().items() if "parametrizations." not in k}
    for name in masked:
        state[name] = model.get_submodule(name.rpartition(".")[0]).weight.detach()
    tensors, tied, seen = {}, {}, {}
    for name, t in state.items():
        key = (t.data_ptr(), t.shape, t.dtype) if t.numel() else None
        if key is not None and key in seen:
            tied[name] = seen[key]
            continue
        if key is not None:
            seen[key] = name
        tensors[name] = t.detach().contiguous().cpu()
    return tensors, tied, masked


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save(model: nn.Module, directory: str | os.PathLike, plan: Plan | None = None,
         metadata: dict | None = None, compress: Mode | None = None, entropy: bool = False) -> Path:
    """Write ``model`` to ``directory`` as ``model.safetensors`` + ``manifest.json``.

    ``compress="bitmask"`` stores sparse weights as a bitmask and their non-zero values (exact);
    ``compress="int8"`` also quantizes every weight to int8 with one scale per output row; ``entropy``
    LZMA-codes the weights file (``model.safetensors.xz``). ``load`` reads all of them.

    >>> save(nn.Linear(2, 2), "/tmp/secateur-doc").name
    'secateur-doc'
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, tied, masked = _plain_state(model)
    encoding = {}
    if compress is not None:
        stored = {}
        for name, t in tensors.items():
            parts, encoding[name] = encode(name, t, compress)
            stored.update(parts)
        tensors = stored
    unexpressed = update_config(model)
    manifest = {
        "format": FORMAT, "secateur_version": __version__, "model_class": type(model).__qualname__,
        "tensors": {k: list(v.shape) for k, v in tensors.items()}, "tied": tied, "masked": masked,
        "plan": plan.to_dict() if plan else None, "metadata": metadata or {},
        "hf_config_complete": not unexpressed if hasattr(getattr(model, "config", None), "to_dict") else None,
        "hf_config_unexpressed": unexpressed, "removed_blocks": getattr(model, "secateur_blocks", []),
    }
    manifest["encoding"] = encoding
    manifest["weights"] = WEIGHTS + (".xz" if entropy else "")
    for stale in {WEIGHTS, WEIGHTS + ".xz"} - {manifest["weights"]}:
        (directory / stale).unlink(missing_ok=True)
    # "pt" lets Hugging Face's from_pretrained read the same file; the manifest carries our format.
    payload = tensors_to_bytes(tensors, metadata={"format": "pt"})
    _write_atomic(directory / manifest["weights"], lambda p: p.write_bytes(lzma.compress(payload) if entropy
                                                                         else payload))
    config = getattr(model, "config", None)
    if hasattr(config, "save_pretrained"):
        config.save_pretrained(directory)
    _write_atomic(directory / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1)))
    return directory


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of a saved model, with a clear error when the folder is not one."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ModelFileError(f"{directory} holds no saved model ({MANIFEST} and {WEIGHTS} are needed); "
                             "write one with secateur.save(model, directory)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ModelFileError(f"{path} has format {manifest.get('format')!r}; this secateur reads {FORMAT!r}")
    return manifest


def read_weights(directory: str | os.PathLike, manifest: dict) -> dict[str, torch.Tensor]:
    """The saved tensors by name, decoded from whatever compression ``save`` used."""
    path = Path(directory) / manifest.get("weights", WEIGHTS)
    if not path.is_file():
        raise ModelFileError(f"{path} is missing; the folder was not fully written by secateur.save")
    raw = path.read_bytes()
    stored = tensors_from_bytes(lzma.decompress(raw) if path.suffix == ".xz" else raw)
    encoding = manifest.get("encoding") or {}
    if not encoding:
        return stored
    return {name: decode(name, stored, meta) for name, meta in encoding.items()}


def _resize_to(model: nn.Module, owners: dict, name: str, shape: list[int], dtype: torch.dtype) -> None:
    """Give tensor ``name`` (and every module that shares it) an empty tensor of the saved shape."""
    path, _, leaf = name.rpartition(".")
    module = model.get_submodule(path) if path else model
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


def load(directory: str | os.PathLike, base: nn.Module | Callable[[], nn.Module] | str | os.PathLike,
         masks: bool = True) -> nn.Module:
    """Rebuild a saved (pruned) model on ``base``: a fresh module, a class / factory that makes one, or
    the folder of the original Hugging Face model.

    With ``masks=True`` weights that were masked when saved get their masks back (zeros stay zero
    through further fine-tuning).
    """
    manifest = read_manifest(directory)
    tensors = read_weights(directory, manifest)
    if isinstance(base, str | os.PathLike):
        from .resolve import hf_factory

        base = hf_factory(base)
    model = base if isinstance(base, nn.Module) else base()
    for blocks in manifest.get("removed_blocks", []):
        remove_blocks(model, blocks)
    if manifest.get("removed_blocks"):
        model.secateur_blocks = list(manifest["removed_blocks"])
    owners = tensor_owners(model)
    for name, t in tensors.items():
        _resize_to(model, owners, name, list(t.shape), t.dtype)
    sync_attention(model)
    update_config(model)
    result = model.load_state_dict(tensors, strict=False)
    missing = set(result.missing_keys) - set(manifest["tied"])
    if missing or result.unexpected_keys:
        raise ModelFileError(f"{directory} does not fit {type(model).__name__}: missing {sorted(missing)[:5]}, "
                             f"unexpected {sorted(result.unexpected_keys)[:5]}; pass the original architecture")
    if masks:
        for name in manifest["masked"]:
            module = model.get_submodule(name.rpartition(".")[0])
            apply_mask(module, module.weight.detach() != 0)
    return model
