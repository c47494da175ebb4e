"""A model's state as secateur stores it: effective weights (masks folded in) with shared tensors once, the
keep-masks, and the stored form of each tensor; and the checks that a file holds exactly what its manifest
lists before any of it reaches a model."""

from __future__ import annotations

import lzma

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as tensors_from_bytes
from torch import nn

from ..compress import Mode, decode, encode
from ..errors import ModelFileError
from ..masks import find_mask
from ..surgery import owner
from .manifest import DTYPES, Manifest, TensorEntry


def model_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, torch.Tensor]]:
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


def entry(t: torch.Tensor, encoding: str) -> TensorEntry:
    return TensorEntry(shape=list(t.shape), dtype=str(t.dtype).removeprefix("torch."), encoding=encoding)


def secateur_encoded(tensors: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], compress: Mode
                     ) -> tuple[dict[str, torch.Tensor], dict[str, TensorEntry]]:
    """The tensors to store in secateur's exact encoding (``compress.py``) and each tensor's entry."""
    stored, entries = {}, {}
    for name, t in tensors.items():
        parts, meta = encode(name, t, compress, masks.get(name))
        stored.update(parts)
        entries[name] = TensorEntry(**meta)
    return stored, entries


def decompressed(raw: bytes, limit: int, where: str) -> bytes:
    """LZMA-decoded ``raw``, streamed so that more than ``limit`` bytes are never produced."""
    decoder, parts, size, chunk = lzma.LZMADecompressor(), [], 0, raw
    try:
        while not decoder.eof:
            out = decoder.decompress(chunk, max_length=min(16 << 20, limit + 1 - size))
            chunk = b""
            size += len(out)
            parts.append(out)
            if size > limit:
                raise ModelFileError(f"{where} expands beyond the {limit:,} bytes its manifest records; the file is "
                                     "damaged or hostile")
            if decoder.needs_input and not decoder.eof:
                raise ModelFileError(f"{where} ends before its LZMA stream does; the file is truncated")
    except lzma.LZMAError as err:
        raise ModelFileError(f"{where} is not a valid LZMA stream ({err}); the file is damaged") from None
    return b"".join(parts)


def parse_tensors(raw: bytes, where: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, or a :class:`ModelFileError` naming the file."""
    try:
        return tensors_from_bytes(raw)
    except (SafetensorError, ValueError, TypeError, RuntimeError, OverflowError) as err:
        raise ModelFileError(f"{where} is not a valid safetensors file ({str(err)[:160]}); the file is "
                             "damaged") from None


def _parts(name: str, meta: TensorEntry) -> dict[str, tuple[str, ...]]:
    """The stored tensor names an entry needs and the dtypes each may have."""
    floats = ("float32", "float16", "bfloat16", "float64")
    if meta.encoding == "plain":
        return {name: (meta.dtype, "float16") if meta.dtype in floats else (meta.dtype,)}
    if meta.encoding == "ct-int8":
        return {name: ("int8",), name.removesuffix("weight") + "weight_scale": floats}
    parts = {f"{name}::values": ("int8",) if meta.encoding.endswith("int8") else floats}
    if meta.encoding.startswith("bitmask"):
        parts[f"{name}::bits"] = ("uint8",)
    if meta.encoding.endswith("int8"):
        parts[f"{name}::scale"] = floats
    return parts


def check_stored(stored: dict[str, torch.Tensor], manifest: Manifest, where: str) -> None:
    """Every tensor the manifest lists is in the file with an allowed dtype, and nothing else is."""
    expected: dict[str, tuple[str, ...]] = {}
    for name, meta in manifest.tensors.items():
        if meta.dtype not in DTYPES or any(s > 1 << 40 for s in meta.shape):
            raise ModelFileError(f"{where}: {name} has an impossible shape or dtype in the manifest")
        expected.update(_parts(name, meta))
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        raise ModelFileError(f"{where} does not hold what its manifest lists: missing {missing[:3]}, unlisted "
                             f"{extra[:3]}; the folder is damaged or mixed from two saves")
    for key, dtypes in expected.items():
        if str(stored[key].dtype).removeprefix("torch.") not in dtypes:
            raise ModelFileError(f"{where}: {key} is {stored[key].dtype}, not {' or '.join(dtypes)}")


def decode_all(stored: dict[str, torch.Tensor], manifest: Manifest, where: str
               ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The model's tensors (shapes checked against the manifest) and the kept positions of bitmask-stored ones."""
    check_stored(stored, manifest, where)
    tensors, positions = {}, {}
    for name, meta in manifest.tensors.items():
        if meta.encoding == "ct-int8":
            value, kept = _ct_int8(stored, name, meta, where), None
        else:
            value, kept = decode(name, stored, meta.model_dump())
        if list(value.shape) != meta.shape:
            raise ModelFileError(f"{where}: {name} holds shape {list(value.shape)}, the manifest says {meta.shape}")
        tensors[name] = value
        if kept is not None:
            positions[name] = kept
    return tensors, positions


def _ct_int8(stored: dict[str, torch.Tensor], name: str, meta: TensorEntry, where: str) -> torch.Tensor:
    """A compressed-tensors int8 weight (one scale per output row) back to floats."""
    q, scale = stored[name], stored[name.removesuffix("weight") + "weight_scale"]
    if q.dim() != 2 or list(q.shape) != meta.shape or list(scale.shape) != [q.shape[0], 1]:
        raise ModelFileError(f"{where}: {name} and its weight_scale do not have the shapes of an int8 matrix "
                             "with one scale per row")
    return (q.float() * scale.float()).to(getattr(torch, meta.dtype))


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.detach().flatten().cpu().numpy().astype(bool)))


def unpack_bits(bits: torch.Tensor, shape: list[int], where: str) -> torch.Tensor:
    numel = int(np.prod(shape))
    if bits.dtype != torch.uint8 or bits.dim() != 1 or bits.numel() != (numel + 7) // 8:
        raise ModelFileError(f"{where}: a mask of shape {shape} needs {(numel + 7) // 8} bytes of bits")
    return torch.from_numpy(np.unpackbits(bits.numpy(), count=numel).astype(bool)).reshape(shape)
