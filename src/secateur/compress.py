"""Exact sparse storage: a bitmask of the kept positions plus their values.

A masked weight stores its *mask* as the bitmask (so ``load`` restores the very mask, whatever the
values), an unmasked tensor that is mostly zeros stores its non-zeros; both are lossless. With
``int8`` the values are also quantized (symmetric, one fp16 scale per output row, so zero stays
exactly zero) and small float vectors are stored as fp16. Decoding gives back exactly what was
stored. ``SPARSE_FROM``: the zero fraction from which an unmasked tensor is stored sparse.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from .errors import ModelFileError

Mode = Literal["auto", "int8"]
SPARSE_FROM = 0.5


def _row_scale(w: torch.Tensor) -> torch.Tensor:
    return (w.reshape(w.shape[0], -1).abs().amax(1) / 127).clamp_min(1e-12)


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per output row (fp16-representable): ``w ~ q * scale[row]``; zero
    maps to zero."""
    scale = _row_scale(w).half().float()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero row: any scale keeps it zero
    q = torch.round(w.reshape(w.shape[0], -1) / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (q.reshape(q.shape[0], -1).float() * scale[:, None]).reshape(q.shape)


def _positions(t: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor | None:
    if keep is not None:
        return keep.to(torch.bool)
    nonzero = t != 0
    return nonzero if t.numel() and 1 - float(nonzero.float().mean()) >= SPARSE_FROM else None


def encode(name: str, t: torch.Tensor, mode: Mode = "auto", keep: torch.Tensor | None = None
           ) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors to store for ``name`` and how to decode them; ``keep`` is the tensor's mask, if masked."""
    t = t.detach().cpu().contiguous()
    meta = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
    if t.dim() < 2 or not t.is_floating_point():
        small = mode == "int8" and t.is_floating_point()
        return {name: t.half() if small else t}, {**meta, "encoding": "plain"}
    out: dict[str, torch.Tensor] = {}
    values = t
    if mode == "int8":
        values, scale = quantize_rows(t.float())
        out[f"{name}::scale"] = scale.half()
    positions = _positions(t, keep)
    suffix = "-int8" if mode == "int8" else ""
    if positions is None:
        out[f"{name}::values"] = values
        return out, {**meta, "encoding": f"dense{suffix}"}
    out[f"{name}::bits"] = torch.from_numpy(np.packbits(positions.flatten().numpy()))
    out[f"{name}::values"] = values.flatten()[positions.flatten()]
    return out, {**meta, "encoding": f"bitmask{suffix}"}


def _damaged(name: str, what: str) -> ModelFileError:
    return ModelFileError(f"{name}: {what}; the weights file is damaged")


def decode(name: str, stored: dict[str, torch.Tensor], meta: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The tensor ``encode`` stored under ``name``, and its kept positions (None when stored dense); every
    size is checked against ``meta`` first, so a damaged file is a :class:`ModelFileError`, never a crash."""
    shape, dtype, encoding = meta["shape"], getattr(torch, meta["dtype"]), meta["encoding"]
    numel = int(np.prod(shape))
    if encoding == "plain":
        if stored[name].numel() != numel:
            raise _damaged(name, f"{stored[name].numel()} values stored for shape {shape}")
        return stored[name].reshape(shape).to(dtype), None
    values, positions = stored[f"{name}::values"], None
    if encoding.startswith("bitmask"):
        bits = stored[f"{name}::bits"]
        if bits.dim() != 1 or bits.numel() != (numel + 7) // 8 or values.dim() != 1:
            raise _damaged(name, f"a bitmask of {bits.numel()} bytes does not cover shape {shape}")
        positions = torch.from_numpy(np.unpackbits(bits.numpy(), count=numel).astype(bool))
        if int(positions.sum()) != values.numel():
            raise _damaged(name, f"the bitmask keeps {int(positions.sum())} positions but {values.numel()} values "
                           "are stored")
        full = torch.zeros(numel, dtype=values.dtype)
        full[positions] = values
        values, positions = full, positions.reshape(shape)
    elif values.numel() != numel:
        raise _damaged(name, f"{values.numel()} values stored for shape {shape}")
    if encoding.endswith("int8"):
        scale = stored[f"{name}::scale"]
        if not shape or scale.dim() != 1 or scale.numel() != shape[0]:
            raise _damaged(name, f"{scale.numel()} row scales stored for shape {shape}")
        values = dequantize_rows(values.reshape(shape), scale.float())
    return values.reshape(shape).to(dtype), positions
