"""Read saved folders, verified: every file's size and SHA-256, every tensor listed and present, tied and
masked tensors, bounded decompression; then rebuild the model without damaging ``base`` if anything fails."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import InvalidParameterError, ModelFileError, SecateurError
from ..masks import apply_mask
from ..plan import Plan, apply, record
from ..surgery import groups_resized, owner, stored, sync_module_attributes, tensor_owners
from ..transaction import atomic, restored_data
from . import hf
from .folder import MANIFEST, Snapshot
from .manifest import MAX_BYTES, Manifest, parse_manifest
from .state import decode_all, decompressed, parse_tensors, unpack_bits

ATTEMPTS = 8  # a save committed while reading: read the new one (each commit replaces the folder in one step)


def read_manifest(directory: str | os.PathLike) -> Manifest:
    """The validated manifest of a saved folder (its files are not read).

    >>> import tempfile, secateur as sc
    >>> read_manifest(sc.save(nn.Linear(2, 2), tempfile.mkdtemp() + "/m")).kind
    'secateur'
    """
    with Snapshot(directory) as snap:
        return parse_manifest(snap.read(MANIFEST, MAX_BYTES), str(snap.path / MANIFEST))


def _verified(snap: Snapshot, manifest: Manifest, name: str) -> bytes:
    expected = manifest.files[name]
    raw = snap.read(name, expected.bytes)
    if len(raw) != expected.bytes or hashlib.sha256(raw).hexdigest() != expected.sha256:
        raise ModelFileError(f"{snap.path / name} does not match the size and SHA-256 in the manifest: the file is "
                             "damaged or from another save")
    return raw


def read_folder(directory: str | os.PathLike) -> tuple[Manifest, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Verify a saved folder and decode it: (manifest, tensors, keep-masks by name). Nothing else is touched.

    >>> import tempfile, secateur as sc
    >>> sorted(read_folder(sc.save(nn.Linear(2, 2), tempfile.mkdtemp() + "/m"))[1])
    ['bias', 'weight']
    """
    attempt = 0
    while True:
        with Snapshot(directory) as snap:
            try:
                return _read(snap)
            except ModelFileError:
                attempt += 1
                if attempt == ATTEMPTS or not snap.replaced():
                    raise


def _read(snap: Snapshot) -> tuple[Manifest, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    where = str(snap.path / MANIFEST)
    manifest = parse_manifest(snap.read(MANIFEST, MAX_BYTES), where)
    contents = {name: _verified(snap, manifest, name) for name in manifest.files}
    raw = contents[manifest.weights]
    if manifest.weights.endswith(".xz"):
        limit = manifest.files[manifest.weights].decoded_bytes
        if limit is None:
            raise ModelFileError(f"{where}: {manifest.weights} is LZMA-coded but its decoded size is not recorded")
        raw = decompressed(raw, limit, str(snap.path / manifest.weights))
    stored = parse_tensors(raw, str(snap.path / manifest.weights))
    tensors, positions = decode_all(stored, manifest, str(snap.path / manifest.weights))
    tensors = hf.unpadded(tensors, manifest)
    if manifest.masks is not None:
        bits = parse_tensors(contents[manifest.masks], str(snap.path / manifest.masks))
        positions |= {n: unpack_bits(bits[n], list(tensors[n].shape), manifest.masks) for n in manifest.masked
                      if n in bits}
    lost = [n for n in manifest.masked if n not in positions]
    if lost:
        raise ModelFileError(f"{where}: the mask of {lost[0]} is not stored; the folder is damaged")
    return manifest, tensors, positions


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
        groups = groups_resized(holder, shape[0]) if attr == "weight" else None
        (holder._parameters if attr in holder._parameters else holder._buffers)[attr] = new
        sync_module_attributes(holder, groups)


def _fit(model: nn.Module, manifest: Manifest, tensors: dict[str, torch.Tensor], directory: Path) -> None:
    """After the plans every saved tensor must fit its slot (resized here only when no plan was recorded),
    every slot must be filled, and tied tensors must be tied in the model too."""
    current = {k: v for k, v in model.state_dict().items() if "parametrizations." not in k}
    missing = sorted(set(current) - set(tensors) - set(manifest.tied))
    unexpected = sorted((set(tensors) | set(manifest.tied)) - set(current))
    if missing or unexpected:
        raise ModelFileError(f"{directory} does not fit {type(model).__name__}: missing {missing[:5]}, unexpected "
                             f"{unexpected[:5]}; pass the original architecture as base=")
    wrong = {k: (tuple(current[k].shape), tuple(t.shape)) for k, t in tensors.items() if current[k].shape != t.shape}
    if wrong and manifest.plans:
        name, (have, saved) = min(wrong.items())  # the first by name: the same error on every run
        raise ModelFileError(f"{directory}: after replaying its plans, {name} is {have} but the file holds {saved}; "
                             "pass the original architecture as base=")
    owners = tensor_owners(model)
    for name in wrong:
        _resize_to(model, owners, name, list(tensors[name].shape), tensors[name].dtype)
    _check_ties(model, manifest, directory)


def _check_ties(model: nn.Module, manifest: Manifest, directory: Path) -> None:
    for alias, source in manifest.tied.items():
        if stored(*owner(model, alias)) is not stored(*owner(model, source)):
            raise ModelFileError(f"{directory} stores {alias} as the same tensor as {source}, but "
                                 f"{type(model).__name__} keeps them separate; pass the original architecture")


def _base(base: nn.Module | Callable[[], nn.Module] | str | os.PathLike) -> nn.Module:
    if isinstance(base, nn.Module):
        return base
    if isinstance(base, str | os.PathLike):
        from ..resolve import hf_factory

        return hf_factory(base)()
    if not callable(base):
        raise InvalidParameterError(f"base= is a {type(base).__name__}; pass a module, a factory that makes one, or "
                                    "the folder of the original Hugging Face model")
    return base()


def _replay(model: nn.Module, plans: list[Plan], directory: Path) -> None:
    for plan in plans:
        try:
            apply(model, plan, remember=False)
        except SecateurError:
            raise
        except Exception as err:  # recorded data that does not fit this model, whatever the op that noticed
            raise ModelFileError(f"{directory}: a recorded plan does not apply to {type(model).__name__} "
                                 f"({type(err).__name__}: {str(err)[:160]}); pass the original architecture") from None


def load(directory: str | os.PathLike, base: nn.Module | Callable[[], nn.Module] | str | os.PathLike,
         masks: bool = True) -> nn.Module:
    """Rebuild a saved (pruned) model on ``base``: a fresh module, a class / factory that makes one, or
    the folder of the original Hugging Face model. Every file is checked (size, SHA-256, every tensor
    listed and present) before the model is touched; the recorded plans are replayed, weights loaded, and
    with ``masks=True`` masked weights get their masks back (zeros stay zero through fine-tuning). If
    anything fails, a ``base`` instance is left exactly as it was, tensors and all.

    >>> import tempfile, secateur as sc
    >>> folder = sc.save(nn.Linear(2, 2), tempfile.mkdtemp() + "/doc")
    >>> load(folder, base=lambda: nn.Linear(2, 2)).weight.shape
    torch.Size([2, 2])
    """
    directory = Path(directory)
    manifest, tensors, positions = read_folder(directory)
    plans = [Plan.from_dict(p) for p in manifest.plans]
    model = _base(base)
    with atomic(model), restored_data(model if isinstance(base, nn.Module) else None):
        _replay(model, plans, directory)
        _fit(model, manifest, tensors, directory)
        model.load_state_dict(tensors, strict=False)
        for name in manifest.masked if masks else []:
            module, leaf = owner(model, name)
            apply_mask(module, positions[name], leaf)
    for plan in plans:
        record(model, plan)
    return model


def describe(directory: str | os.PathLike) -> str:
    """One line saying what a saved folder is (after verifying every file): a Hugging Face checkpoint that
    ``from_pretrained`` loads, or a secateur folder that ``secateur.load`` rebuilds (and why).

    >>> import tempfile, secateur as sc
    >>> describe(sc.save(nn.Linear(2, 2), tempfile.mkdtemp() + "/m")).split(": ")[1][:15]
    'secateur folder'
    """
    manifest, tensors, _ = read_folder(directory)
    size = sum(f.bytes for f in manifest.files.values())
    info = manifest.huggingface
    if manifest.kind == "huggingface":
        extra = [f"{len(info.padded)} tensors zero-padded to sizes the config expresses" if info.padded else "",
                 "int8 weights in the compressed-tensors format (needs the compressed-tensors package)"
                 if info.quantization else ""]
        detail = "; ".join(e for e in extra if e)
        return (f"{directory}: Hugging Face checkpoint ({size:,} bytes, {len(tensors)} tensors verified): "
                f"transformers' from_pretrained loads it{'; ' + detail if detail else ''}; secateur load rebuilds "
                "the pruned model exactly")
    why = f" (from_pretrained cannot load it: {info.reason})" if info and info.reason else ""
    return (f"{directory}: secateur folder ({size:,} bytes, {len(tensors)} tensors verified){why}; rebuild it with "
            "`secateur load FOLDER --base MODEL` or secateur.load(folder, base=...)")
