"""Attention bookkeeping after surgery: head counts on attention modules and Hugging Face configs.

Slicing tensors fixes Linear/Conv/Norm sizes (``plan.sync_module_attributes``); attention modules
also cache head counts, and a Hugging Face config is the single truth ``from_pretrained`` rebuilds
shapes from. Both are updated here so users never edit them by hand.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def _out(layer: nn.Module) -> int:
    return layer.nf if hasattr(layer, "nf") else layer.out_features


def sync_attention(model: nn.Module) -> None:
    """Update head-count attributes of known attention modules from their projection sizes."""
    for module in model.modules():
        if hasattr(module, "attention_head_size") and hasattr(module, "query"):  # BERT, ViT
            module.all_head_size = module.query.out_features
            module.num_attention_heads = module.all_head_size // module.attention_head_size
        elif hasattr(module, "c_attn") and hasattr(module, "split_size") and hasattr(module, "head_dim"):  # GPT-2
            module.split_size = _out(module.c_attn) // 3
            module.num_heads = module.split_size // module.head_dim
            module.embed_dim = module.split_size


def _uniform(values: list[int]) -> int | None:
    return values[0] if values and all(v == values[0] for v in values) else None


def _layer_sizes(model: nn.Module) -> dict[str, list[int]]:
    """Per-layer head counts, KV heads and FFN widths, read from module shapes."""
    sizes: dict[str, list[int]] = {"heads": [], "kv_heads": [], "ffn": []}
    for name, m in model.named_modules():
        if hasattr(m, "q_proj") and hasattr(m, "head_dim"):
            sizes["heads"].append(_out(m.q_proj) // m.head_dim)
            sizes["kv_heads"].append(_out(m.k_proj) // m.head_dim)
        elif hasattr(m, "attention_head_size") and hasattr(m, "num_attention_heads"):
            sizes["heads"].append(m.num_attention_heads)
        elif hasattr(m, "c_attn") and hasattr(m, "num_heads"):
            sizes["heads"].append(m.num_heads)
        for ffn in ("up_proj", "c_fc"):
            if hasattr(m, ffn) and name.endswith("mlp"):
                sizes["ffn"].append(_out(getattr(m, ffn)))
        if name.endswith("intermediate") and hasattr(m, "dense"):
            sizes["ffn"].append(_out(m.dense))
    return sizes


_CONFIG_FIELDS = {"heads": ("num_attention_heads", "n_head"), "kv_heads": ("num_key_value_heads",),
                  "ffn": ("intermediate_size", "n_inner")}


def _read(config: object, name: str, default: object = None) -> object:
    """``config.name`` or ``default``; per-layer configs raise on a global read of a per-layer field."""
    try:
        return getattr(config, name, default)
    except Exception:  # transformers' AmbiguousGlobalPerLayerAttributeError is not an AttributeError
        return default


def update_config(model: nn.Module) -> list[str]:
    """Write new sizes into ``model.config`` where it can express them; return the sizes it cannot
    (they vary by layer, or the config derives them). ``from_pretrained`` rebuilds the model only when
    that list is empty; ``secateur.load`` always does, reading shapes from the weights file."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return []
    head_dim = next((m.head_dim for m in model.modules() if hasattr(m, "q_proj") and hasattr(m, "head_dim")), None)
    if head_dim is not None:
        config.head_dim = head_dim
    try:
        embeddings = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):  # vision models have none
        embeddings = None
    for field_name in ("hidden_size", "n_embd", "dim", "d_model"):
        if isinstance(embeddings, nn.Embedding) and _read(config, field_name) is not None:
            setattr(config, field_name, embeddings.embedding_dim)
            break
    unexpressed = []
    for key, values in _layer_sizes(model).items():
        value = _uniform(values)
        fields = [f for f in _CONFIG_FIELDS[key] if _read(config, f) is not None]
        if key in ("heads", "kv_heads") and _read(config, "head_dim") is None:
            fields = []  # head size is derived as hidden / heads here: a new head count is not expressible
        if values and (value is None or not fields) and value != _read(config, _CONFIG_FIELDS[key][0], value):
            unexpressed.append(key)
        for field_name in fields:
            if value is not None:
                setattr(config, field_name, value)
    return unexpressed or _rebuild_mismatch(model)


def _rebuilt(model: nn.Module, config: object) -> nn.Module | None:
    """The model class built from ``config`` on the meta device; None when a config alone cannot build it."""
    try:
        with torch.device("meta"):
            return type(model)(copy.deepcopy(config))
    except Exception:  # not a Hugging Face-style class: nothing to check
        return None


def _mismatches(model: nn.Module, fresh: nn.Module) -> dict[str, tuple]:
    """Parameters whose shape differs between ``model`` and ``fresh``, or that only one of them has:
    name -> (shape in ``fresh``, shape in ``model``), None for a missing one."""
    theirs = {n: tuple(p.shape) for n, p in fresh.named_parameters()}
    ours = {n: tuple(p.shape) for n, p in model.named_parameters()}
    wrong = {n: (theirs.get(n), shape) for n, shape in ours.items() if theirs.get(n) != shape}
    wrong.update({n: (shape, None) for n, shape in theirs.items() if n not in ours})
    return wrong


def _settings(model: nn.Module) -> dict[tuple[str, str], object]:
    """Every float and bool attribute of every module (scales, flags): a fit may change sizes, never these."""
    return {(name, key): value for name, module in model.named_modules() for key, value in vars(module).items()
            if isinstance(value, float | bool)}


def _int_fields(config: object, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], int]]:
    """Every integer field of ``config`` and of its nested configs, as (attribute path, value)."""
    out = []
    for key, value in vars(config).items():
        if hasattr(value, "to_dict") and len(path) < 3:
            out += _int_fields(value, (*path, key))
        elif isinstance(value, int) and not isinstance(value, bool):
            out.append(((*path, key), value))
    return out


def _set(config: object, path: tuple[str, ...], value: int) -> None:
    for key in path[:-1]:
        config = getattr(config, key)
    setattr(config, path[-1], value)


def _better_field(model: nn.Module, wrong: dict[str, tuple], settings: dict) -> tuple | None:
    """A config field holding a dense size that a cut changed, whose new value leaves fewer mismatches and
    the same module settings (MLA's ``q_lora_scale`` depends on the rank: such a field is not fitted)."""
    sizes = {(a, b) for built, actual in wrong.values() if built and actual and len(built) == len(actual)
             for a, b in zip(built, actual, strict=True) if a != b}
    for path, value in _int_fields(model.config):
        for new in sorted(b for a, b in sizes if a == value):
            trial = copy.deepcopy(model.config)
            _set(trial, path, new)
            fresh = _rebuilt(model, trial)
            after = _mismatches(model, fresh) if fresh is not None else wrong
            if len(after) < len(wrong) and set(after) <= set(wrong) and _settings(fresh) == settings:
                return path, new, after
    return None


def _rebuild_mismatch(model: nn.Module) -> list[str]:
    """Fit config fields secateur has no name for (T5's ``d_ff``, Falcon's ``ffn_hidden_size``): while the class
    built from the config (meta device) lacks the pruned shapes, set a field that held a changed dense size to
    the new size if that fits better. Returns ``["shapes (names)"]`` for what still does not fit, else ``[]``."""
    fresh = _rebuilt(model, model.config)
    if fresh is None:
        return []
    wrong, settings = _mismatches(model, fresh), _settings(fresh)
    while wrong and (found := _better_field(model, wrong, settings)) is not None:
        path, new, wrong = found
        _set(model.config, path, new)
    return [f"shapes ({', '.join(list(wrong)[:3])}{', ...' if len(wrong) > 3 else ''})"] if wrong else []
