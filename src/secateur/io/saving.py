"""Save and load pruned models: safetensors weights plus a JSON manifest, written atomically, read verified.

A folder is one of two kinds, and the manifest says which. A *Hugging Face checkpoint* (``config.json`` +
``model.safetensors``) loads with plain ``from_pretrained`` and gives the pruned model's outputs; ``save``
writes one when the model is a transformers model whose config expresses every pruned size and whose
weights are dense, and ``save_pretrained`` (``hf.py``) always does. Otherwise it is a *secateur folder*:
no ``config.json`` (so ``from_pretrained`` fails loudly instead of loading random weights), weights in
``secateur.safetensors`` in the exact sparse encoding of ``compress.py`` (plain ``model.safetensors``
for a dense model that is not a transformers model). ``load`` replays the recorded plans on a fresh
instance of the original architecture, checks every file, tensor and shape, and loads.
"""

from __future__ import annotations

import lzma
import os
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..compress import SPARSE_FROM, Mode
from ..errors import InvalidParameterError, NotExpressibleError
from ..plan import Plan, history
from . import hf
from .folder import MANIFEST, write_folder
from .fs import check_name, write_file
from .manifest import FileEntry, HuggingFace, Manifest, dump_manifest
from .state import entry, model_state, secateur_encoded

PLAIN, ENCODED, CONFIG = "model.safetensors", "secateur.safetensors", "secateur.config.json"


def _plans(model: nn.Module, plan: Plan | None) -> list[Plan]:
    plans = history(model)
    if plan is not None and not any(p is plan for p in plans):
        plans.append(plan)
    return plans


def _mostly_zero(t: torch.Tensor) -> bool:
    return t.dim() >= 2 and t.is_floating_point() and t.numel() > 0 and float((t == 0).float().mean()) >= SPARSE_FROM


def _secateur_files(model: nn.Module, state: tuple, compress: Mode, entropy: bool, reason: str | None
                    ) -> tuple[dict[str, bytes], dict]:
    """The weights (and, for transformers models, the config under a name ``from_pretrained`` ignores)."""
    from safetensors.torch import save as tensors_to_bytes

    tensors, _, masks = state
    stored, entries = secateur_encoded(tensors, masks, compress)
    plain = all(e.encoding in ("plain", "dense") for e in entries.values())
    name = (PLAIN if plain and reason is None else ENCODED) + (".xz" if entropy else "")
    if plain:
        stored, entries = tensors, {k: entry(t, "plain") for k, t in tensors.items()}
    payload = tensors_to_bytes(stored, metadata={"format": "pt"})
    files = {name: lzma.compress(payload) if entropy else payload}
    if reason is not None:
        files[CONFIG] = hf.config_json(model, hf.config_changes(model)[0]).encode()
    return files, {"weights": name, "tensors": entries, "decoded": {name: len(payload)} if entropy else {},
                   "huggingface": HuggingFace(loadable=False, reason=reason) if reason else None}


def _choose(model: nn.Module, state: tuple, compress: Mode, entropy: bool) -> tuple[dict[str, bytes], dict]:
    """A Hugging Face checkpoint when that is exact and dense; else a secateur folder (and why not HF)."""
    if not hf.is_transformers(model):
        return _secateur_files(model, state, compress, entropy, None)
    tensors, _, masks = state
    sparse = masks or any(_mostly_zero(t) for t in tensors.values())
    reason = ("its weights are sparse (saved exactly, in secateur's sparse encoding)" if sparse and compress == "auto"
              else "it is stored as int8 or LZMA-coded" if compress != "auto" or entropy else None)
    if reason is None:
        try:
            return hf.checkpoint_files(model, state, pad=False, quantize=None)
        except NotExpressibleError as err:
            reason = str(err)
    return _secateur_files(model, state, compress, entropy, reason)


def _manifest(model: nn.Module, state: tuple, parts: dict, records: dict[str, dict], plans: list[Plan],
              metadata: dict | None) -> Manifest:
    _, tied, masks = state
    files = {n: FileEntry(**r, decoded_bytes=parts.get("decoded", {}).get(n)) for n, r in records.items()}
    return Manifest(format="secateur.v3", secateur_version=__version__,
                    kind="huggingface" if "config.json" in files else "secateur", model_class=type(model).__qualname__,
                    weights=parts["weights"], masks=parts.get("masks"), files=files, tensors=parts["tensors"],
                    tied=tied, masked=sorted(masks), plans=[p.to_dict() for p in plans], metadata=metadata or {},
                    huggingface=parts.get("huggingface"))


def write_saved(directory: str | os.PathLike, model: nn.Module, files: dict[str, bytes], parts: dict,
                plans: list[Plan], metadata: dict | None, overwrite: bool) -> Path:
    """Write ``files`` and their manifest into ``directory`` atomically (the manifest last)."""
    state = model_state(model)

    def stage(folder: Path) -> None:
        records = {name: write_file(folder / name, data) for name, data in files.items()}
        write_file(folder / MANIFEST, dump_manifest(_manifest(model, state, parts, records, plans, metadata)))

    return write_folder(directory, set(files) | {MANIFEST}, stage, overwrite)


def save(model: nn.Module, directory: str | os.PathLike, plan: Plan | None = None, metadata: dict | None = None,
         compress: Mode = "auto", entropy: bool = False, overwrite: bool = False,
         extra_files: dict[str, bytes] | None = None) -> Path:
    """Write ``model`` to ``directory`` atomically: weights, ``manifest.json`` (files with sizes and SHA-256,
    every tensor, every plan applied to the model) and, for transformers models, the config. The model is
    not changed. A folder that holds files secateur did not write is refused unless ``overwrite`` (which
    replaces only files with the names secateur writes); a second process writing the same folder at
    once fails with :class:`~secateur.errors.FolderLockedError`.

    A transformers model with dense weights whose config expresses its pruned sizes becomes a Hugging Face
    checkpoint; anything else a secateur folder that ``from_pretrained`` refuses (:func:`save_pretrained`
    always writes a checkpoint). ``compress="auto"`` keeps masked and mostly-zero weights as bitmask +
    values (exact); ``"int8"`` also quantizes weights per output row; ``entropy`` LZMA-codes the weights.
    ``plan`` adds a plan the model's history lacks (e.g. for a copy); ``extra_files`` (name -> bytes) are
    written and listed with the rest.

    >>> import tempfile
    >>> save(nn.Linear(2, 2), tempfile.mkdtemp() + "/doc").name
    'doc'
    """
    if compress not in ("auto", "int8"):
        raise InvalidParameterError(f"compress={compress!r} is not 'auto' or 'int8'")
    state = model_state(model)
    files, parts = _choose(model, state, compress, entropy)
    files |= _extra(extra_files, files)
    return write_saved(directory, model, files, parts, _plans(model, plan), metadata, overwrite)


def _extra(extra: dict[str, bytes] | None, files: dict[str, bytes]) -> dict[str, bytes]:
    for name in extra or {}:
        if check_name(name, "extra_files") in files or name == MANIFEST:
            raise InvalidParameterError(f"extra_files: {name!r} is a name secateur writes itself; choose another")
    return dict(extra or {})




def save_pretrained(model: nn.Module, directory: str | os.PathLike, compress: str | None = None,
                    metadata: dict | None = None, overwrite: bool = False, plan: Plan | None = None,
                    extra_files: dict[str, bytes] | None = None) -> Path:
    """Write a Hugging Face checkpoint that plain ``transformers`` ``from_pretrained`` loads, giving the
    pruned model's outputs: masks baked into dense weights, the config rewritten with the pruned sizes,
    and per-layer sizes a config cannot express (non-uniform FFN widths, BERT head counts) zero-padded
    back to a size it can (padded units contribute exactly zero). ``compress="int8"`` stores Linear
    weights in the compressed-tensors int8 format (one scale per output row), which transformers loads
    when the ``compressed-tensors`` package is installed. ``secateur.load`` also reads the folder and
    rebuilds the unpadded pruned model, masks included. The other arguments are those of :func:`save`. Raises
    :class:`~secateur.errors.NotExpressibleError` when no config can express the model (e.g. a pruned
    hidden size under LayerNorm with derived head sizes); use :func:`save` then.

    >>> import tempfile
    >>> from secateur.zoo.hf import llama
    >>> save_pretrained(llama(), tempfile.mkdtemp() + "/hf").joinpath("config.json").is_file()
    True
    """
    if compress not in (None, "int8"):
        raise InvalidParameterError(f"compress={compress!r} is not None or 'int8'")
    if not hf.is_transformers(model):
        raise NotExpressibleError(f"{type(model).__name__} is not a transformers model, so no config can describe "
                                  "it; save it with secateur.save(model, folder)")
    files, parts = hf.checkpoint_files(model, model_state(model), pad=True, quantize=compress)
    files |= _extra(extra_files, files)
    return write_saved(directory, model, files, parts, _plans(model, plan), metadata, overwrite)
