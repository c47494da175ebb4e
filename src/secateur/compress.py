"""Compact storage of sparse weights: a bitmask of the non-zeros plus their values, fp32 or int8
(symmetric, one scale per output row, so zeros stay exactly zero), optionally entropy-coded (LZMA,
standing in for the Huffman stage of Deep Compression, Han et al. 2016). In int8 mode the small
float vectors (biases, norm parameters, the per-row scales) are stored as fp16. Decoding is exact:
a tensor comes back bit for bit (``bitmask``) or as exactly the value it was stored as (``int8``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Mode = Literal["bitmask", "int8"]
SPARSE_FROM = 0.25  # store a tensor as bitmask + values when at least this fraction is zero


def _row_scale(w: torch.Tensor) -> torch.Tensor:
    return (w.reshape(w.shape[0], -1).abs().amax(1) / 127).clamp_min(1e-12)


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per output row (fp16-representable): ``w ~ q * scale[row]``; zero
    maps to zero."""
    scale = _row_scale(w).half().float()
    q = torch.round(w.reshape(w.shape[0], -1) / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(w.shape), scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (q.reshape(q.shape[0], -1).float() * scale[:, None]).reshape(q.shape)


def encode(name: str, t: torch.Tensor, mode: Mode) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors to store for ``name`` and how to decode them."""
    t = t.detach().cpu().contiguous()
    meta = {"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")}
    weight = t.dim() >= 2 and t.is_floating_point()
    if not weight:
        if mode == "int8" and t.is_floating_point():
            return {name: t.half()}, {**meta, "kind": "plain"}
        return {name: t}, {**meta, "kind": "plain"}
    out: dict[str, torch.Tensor] = {}
    if mode == "int8":
        q, scale = quantize_rows(t.float())
        out[f"{name}::scale"] = scale.half()
        values = q
    else:
        values = t
    nonzero = t != 0
    if 1 - float(nonzero.float().mean()) >= SPARSE_FROM:
        out[f"{name}::mask"] = torch.from_numpy(np.packbits(nonzero.flatten().numpy()))
        out[f"{name}::values"] = values.flatten()[nonzero.flatten()]
        return out, {**meta, "kind": f"sparse-{mode}"}
    out[f"{name}::values"] = values
    return out, {**meta, "kind": f"dense-{mode}"}


def decode(name: str, tensors: dict[str, torch.Tensor], meta: dict) -> torch.Tensor:
    """The tensor ``encode`` stored under ``name``."""
    shape, dtype = meta["shape"], getattr(torch, meta["dtype"])
    if meta["kind"] == "plain":
        return tensors[name].to(dtype)
    values = tensors[f"{name}::values"]
    if meta["kind"].startswith("sparse"):
        numel = int(np.prod(shape))
        mask = torch.from_numpy(np.unpackbits(tensors[f"{name}::mask"].numpy(), count=numel).astype(bool))
        full = torch.zeros(numel, dtype=values.dtype)
        full[mask] = values
        values = full.reshape(shape)
    if meta["kind"].endswith("int8"):
        values = dequantize_rows(values.reshape(shape), tensors[f"{name}::scale"].float())
    return values.reshape(shape).to(dtype)
