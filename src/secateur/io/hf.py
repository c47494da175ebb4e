"""Hugging Face checkpoints that plain ``from_pretrained`` loads with the pruned model's outputs.

The config is rewritten with the pruned sizes it can express (hidden size, layer count, uniform FFN
width and head counts where it has ``head_dim``). Sizes it cannot express are zero-padded back to a
size it can: a layer's FFN channels up to the widest layer, a BERT layer's heads up to the config's
count, Llama key-value groups up to the largest. Padded units have zero weights into and out of them
(the output projection's columns), so they add exactly zero. Each padded tensor records its true
size, and ``secateur.load`` slices the padding off again. Masks are baked into the weights (their bits
go to ``secateur.masks.safetensors``, which ``from_pretrained`` ignores). With ``quantize="int8"``
Linear weights are stored in the compressed-tensors ``naive-quantized`` int8 format: int8 ``weight`` and
a float32 ``weight_scale`` per output row, read by transformers' compressed-tensors integration.

Not written: compressed-tensors' sparse formats (``sparse-bitmask``, ``sparse-24-bitmask``). Version 0.20
of the package no longer decompresses them and transformers 5 then loads such a checkpoint with every
sparse Linear missing and initialised at random, so a checkpoint in those formats would pretend.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save as tensors_to_bytes
from torch import nn

from ..adapters import apply_changes, config_changes
from ..compress import quantize_rows
from ..errors import NotExpressibleError
from ..replacement import replaced_modules
from .manifest import HuggingFace, Manifest, TensorEntry
from .state import entry, pack_bits

WEIGHTS, MASKS, CONFIG, GENERATION = "model.safetensors", "secateur.masks.safetensors", "config.json", \
    "generation_config.json"
CT_VERSION = "0.20.0"


def is_transformers(model: nn.Module) -> bool:
    """A model class of transformers itself (so ``from_pretrained`` needs no code of ours or the user's)."""
    return type(model).__module__.startswith("transformers.models.") and hasattr(getattr(model, "config", None),
                                                                                 "to_json_string")


def config_json(model: nn.Module, changes: dict, quantization: dict | None = None) -> str:
    """The model's config with ``changes`` applied (a copy: the model keeps its own), as ``config.json``."""
    config = copy.deepcopy(model.config)
    apply_changes(config, changes)
    config.architectures = [type(model).__name__]
    data = json.loads(config.to_json_string())
    data.pop("quantization_config", None)
    if quantization:
        data["quantization_config"] = quantization
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _llama_pads(model: nn.Module, unexpressed: list[str]) -> tuple[dict, dict]:
    """Pads and config fields for Llama-style attention (q/k/v/o_proj, head_dim) and MLPs (up/down_proj)."""
    pads, config = {}, {}
    attention = {n: m for n, m in model.named_modules() if all(hasattr(m, a) for a in ("q_proj", "k_proj", "o_proj"))
                 and isinstance(getattr(m, "head_dim", None), int)}
    if attention and {"heads", "kv_heads"} & set(unexpressed):
        shapes = {n: (m.q_proj.out_features // m.head_dim, m.k_proj.out_features // m.head_dim, m.head_dim)
                  for n, m in attention.items()}
        ratios = {q // kv for q, kv, _ in shapes.values() if kv}
        if len(ratios) != 1 or any(q % kv for q, kv, _ in shapes.values()):
            raise NotExpressibleError("query heads per key-value group differ between layers")
        kv_heads, ratio = max(kv for _, kv, _ in shapes.values()), ratios.pop()
        head_dim = next(iter(shapes.values()))[2]
        for n in attention:
            for proj, rows in (("q_proj", kv_heads * ratio), ("k_proj", kv_heads), ("v_proj", kv_heads)):
                pads[f"{n}.{proj}.weight"] = pads[f"{n}.{proj}.bias"] = {0: rows * head_dim}
            pads[f"{n}.o_proj.weight"] = {1: kv_heads * ratio * head_dim}
        config |= {"num_attention_heads": kv_heads * ratio, "num_key_value_heads": kv_heads, "head_dim": head_dim}
    mlps = {n: m for n, m in model.named_modules() if hasattr(m, "up_proj") and hasattr(m, "down_proj")}
    if mlps and "ffn" in unexpressed:
        width = max(m.up_proj.out_features for m in mlps.values())
        for n in mlps:
            for proj in ("gate_proj", "up_proj"):
                pads[f"{n}.{proj}.weight"] = pads[f"{n}.{proj}.bias"] = {0: width}
            pads[f"{n}.down_proj.weight"] = {1: width}
        config["intermediate_size"] = width
    return pads, config


def _bert_pads(model: nn.Module, unexpressed: list[str]) -> tuple[dict, dict]:
    """Pads and config fields for BERT-style layers (attention.self.query/key/value, intermediate, output)."""
    pads, config = {}, {}
    layers = {n: m for n, m in model.named_modules()
              if hasattr(getattr(getattr(m, "attention", None), "self", None), "query") and hasattr(m, "intermediate")}
    if layers and "heads" in unexpressed:
        heads = model.config.num_attention_heads
        for n, m in layers.items():
            rows = heads * m.attention.self.attention_head_size
            for proj in ("query", "key", "value"):
                pads[f"{n}.attention.self.{proj}.weight"] = pads[f"{n}.attention.self.{proj}.bias"] = {0: rows}
            pads[f"{n}.attention.output.dense.weight"] = {1: rows}
    if layers and "ffn" in unexpressed:
        width = max(m.intermediate.dense.out_features for m in layers.values())
        for n in layers:
            pads[f"{n}.intermediate.dense.weight"] = pads[f"{n}.intermediate.dense.bias"] = {0: width}
            pads[f"{n}.output.dense.weight"] = {1: width}
        config["intermediate_size"] = width
    return pads, config


def padded(t: torch.Tensor, sizes: dict[int, int]) -> torch.Tensor:
    """``t`` with zeros appended along each dimension up to ``sizes[dim]``."""
    shape = list(t.shape)
    for dim, size in sizes.items():
        shape[dim] = max(size, shape[dim])
    if shape == list(t.shape):
        return t
    out = torch.zeros(shape, dtype=t.dtype)
    out[tuple(slice(0, s) for s in t.shape)] = t
    return out


def unpadded(tensors: dict[str, torch.Tensor], manifest: Manifest) -> dict[str, torch.Tensor]:
    """The pruned tensors again: each padded tensor sliced back to its true sizes."""
    out = dict(tensors)
    for name, meta in manifest.tensors.items():
        for dim, size in (meta.padded or {}).items():
            out[name] = out[name].narrow(int(dim), 0, min(size, out[name].shape[int(dim)]))
    return out


def _rebuilt(model: nn.Module, config_text: str) -> nn.Module:
    """The model class built on the meta device from ``config_text`` read back as ``from_pretrained`` reads
    a ``config.json`` (special floats such as infinity included); a config transformers refuses, or a class
    it cannot build, is a :class:`NotExpressibleError`."""
    with tempfile.TemporaryDirectory(prefix="secateur-config-") as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(config_text, encoding="utf-8")
        try:
            config = type(model.config).from_json_file(path)
            with torch.device("meta"):
                return type(model)(config)
        except Exception as err:  # whatever transformers raises: the checkpoint would not reopen
            raise NotExpressibleError(f"transformers cannot rebuild {type(model).__name__} from the pruned config "
                                      f"({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None


def _check_shapes(model: nn.Module, config_text: str, tensors: dict[str, torch.Tensor], tied: dict) -> None:
    """Build the architecture from the new config on the meta device: every tensor must have its shape."""
    fresh = _rebuilt(model, config_text)
    expected = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    missing = sorted(set(expected) - set(tensors) - set(tied))
    wrong = sorted(k for k, t in tensors.items() if expected.get(k) != tuple(t.shape))
    if missing or wrong:
        name = (wrong or missing)[0]
        raise NotExpressibleError(f"the config cannot express {name} (config gives {expected.get(name)}, the pruned "
                                  f"model has {tuple(tensors[name].shape) if name in tensors else 'none'})")


def _layout(model: nn.Module, tensors: dict[str, torch.Tensor], pad: bool) -> tuple[dict, dict]:
    """(pads by tensor, config changes), or :class:`NotExpressibleError` saying what cannot be expressed."""
    swapped = replaced_modules(model)
    if swapped:
        raise NotExpressibleError(f"secateur swapped {', '.join(swapped)} for an equivalent module whose sizes prune "
                                  "(transformers would rebuild the original class)")
    changes, unexpressed = config_changes(model)
    if unexpressed and not pad:
        raise NotExpressibleError(f"transformers' config cannot express the pruned {', '.join(unexpressed)} sizes "
                                  "(per-layer, or derived from other sizes)")
    pads: dict[str, dict[int, int]] = {}
    for finder in (_llama_pads, _bert_pads) if unexpressed else ():
        found, fields = finder(model, unexpressed)
        pads |= found
        changes |= fields
    return {k: v for k, v in pads.items() if k in tensors}, changes


def _int8_linears(model: nn.Module, tensors: dict[str, torch.Tensor]) -> tuple[set[str], list[str]]:
    """Weights of nn.Linear layers stored in int8, and the Linear layers left in float (tied ones)."""
    linears = {n: f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    return {w for w in linears.values() if w in tensors}, sorted(n for n, w in linears.items() if w not in tensors)


def quantization_config(ignore: list[str]) -> dict:
    """The compressed-tensors ``quantization_config`` for int8 weights, one symmetric scale per output row."""
    weights = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "channel", "dynamic": False}
    group = {"targets": ["Linear"], "weights": weights, "input_activations": None, "output_activations": None,
             "format": "naive-quantized"}
    return {"quant_method": "compressed-tensors", "format": "naive-quantized", "quantization_status": "compressed",
            "config_groups": {"group_0": group}, "ignore": ignore, "kv_cache_scheme": None, "sparsity_config": {},
            "transform_config": {}, "version": CT_VERSION}


def checkpoint_files(model: nn.Module, state: tuple, pad: bool, quantize: str | None) -> tuple[dict[str, bytes], dict]:
    """The files of a Hugging Face checkpoint of ``model`` and the manifest parts describing them."""
    tensors, tied, masks = state
    pads, changes = _layout(model, tensors, pad)
    int8, ignore = _int8_linears(model, tensors) if quantize == "int8" else (set(), [])
    config = config_json(model, changes, quantization_config(ignore) if quantize else None)
    stored, entries = {}, {}
    for name, t in tensors.items():
        t = padded(t, pads.get(name, {}))
        meta = entry(t, "ct-int8" if name in int8 else "plain")
        if name in pads and list(t.shape) != list(tensors[name].shape):
            meta = TensorEntry(**{**meta.model_dump(), "padded": {str(d): tensors[name].shape[d] for d in pads[name]}})
        entries[name] = meta
        if name in int8:
            q, scale = quantize_rows(t.float())
            stored[name], stored[name.removesuffix("weight") + "weight_scale"] = q, scale[:, None]
        else:
            stored[name] = t
    _check_shapes(model, config, {k: padded(t, pads.get(k, {})) for k, t in tensors.items()}, tied)
    files = {CONFIG: config.encode(), WEIGHTS: tensors_to_bytes(stored, metadata={"format": "pt"})}
    generation = getattr(model, "generation_config", None)
    if hasattr(generation, "to_json_string") and model.can_generate():
        files[GENERATION] = generation.to_json_string().encode()
    if masks:
        files[MASKS] = tensors_to_bytes({n: pack_bits(m) for n, m in masks.items()})
    info = HuggingFace(loadable=True, padded=sorted(k for k, e in entries.items() if e.padded),
                       quantization="compressed-tensors-int8" if quantize else None)
    return files, {"weights": WEIGHTS, "masks": MASKS if masks else None, "tensors": entries, "huggingface": info}
