"""Attention bookkeeping after surgery: head counts on attention modules and Hugging Face configs.

Slicing tensors fixes Linear/Conv/Norm sizes (``plan.sync_module_attributes``); attention modules
also cache head counts, and a Hugging Face config is the single truth ``from_pretrained`` rebuilds
shapes from. Both are updated here so users never edit them by hand.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .split_attention import SplitMultiheadAttention


def _out(layer: nn.Module) -> int:
    return layer.nf if hasattr(layer, "nf") else layer.out_features


def sync_attention(model: nn.Module) -> None:
    """Update head-count attributes of known attention modules from their projection sizes."""
    for module in model.modules():
        if hasattr(module, "attention_head_size") and hasattr(module, "query"):  # BERT, ViT
            module.all_head_size = module.query.out_features
            module.num_attention_heads = module.all_head_size // module.attention_head_size
        elif hasattr(module, "c_attn") and hasattr(module, "kv_dim") and hasattr(module, "multi_query"):  # GPTBigCode
            _sync_bigcode(module)
        elif hasattr(module, "c_attn") and hasattr(module, "split_size") and hasattr(module, "head_dim"):  # GPT-2
            module.split_size = _out(module.c_attn) // 3
            module.num_heads = module.split_size // module.head_dim
            module.embed_dim = module.split_size
        elif hasattr(module, "num_key_value_groups") and hasattr(module, "q_proj") and hasattr(module, "k_proj"):
            module.num_key_value_groups = _out(module.q_proj) // max(_out(module.k_proj), 1)  # Llama-style GQA


def _sync_bigcode(module: nn.Module) -> None:
    """GPTBigCode's fused ``c_attn``: ``H*D`` query features then one key and one value head (multi-query), or
    ``3*H*D`` interleaved per head."""
    width = _out(module.c_attn) - 2 * module.kv_dim if module.multi_query else _out(module.c_attn) // 3
    module.embed_dim = module.split_size = width
    module.num_heads = width // module.head_dim
    module.kv_heads = 1 if module.multi_query else module.num_heads
    module.kv_dim = module.kv_heads * module.head_dim
    module.num_key_value_groups = module.num_heads // module.kv_heads


def _llama_attention(m: nn.Module) -> bool:
    """A Llama-style attention module of transformers (q_proj and a head_dim), not secateur's own
    ``SplitMultiheadAttention``, which the config does not describe."""
    return hasattr(m, "q_proj") and hasattr(m, "head_dim") and not isinstance(m, SplitMultiheadAttention)


def _uniform(values: list[int]) -> int | None:
    return values[0] if values and all(v == values[0] for v in values) else None


def _layer_sizes(model: nn.Module) -> dict[str, list[int]]:
    """Per-layer head counts, KV heads and FFN widths, read from module shapes."""
    sizes: dict[str, list[int]] = {"heads": [], "kv_heads": [], "ffn": []}
    for name, m in model.named_modules():
        if _llama_attention(m):
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


# Hugging Face configs that switch the biases of a module family at once (Llama: attention_bias, mlp_bias).
BIAS_FLAGS = {"attention_bias": ("q_proj", "k_proj", "v_proj", "o_proj"),
              "mlp_bias": ("gate_proj", "up_proj", "down_proj")}


def bias_layers(model: nn.Module, names: list[str]) -> tuple[list[str], list[str]]:
    """Layers to give a (zero) bias so ``names`` can hold one, and the names whose bias the model's Hugging
    Face config cannot express. A bias already there, or a model without a config, needs nothing more; a
    config flag (``attention_bias``) needs the bias on every layer of its family."""
    config = getattr(model, "config", None)
    modules = dict(model.named_modules())
    add, unexpressed = set(), []
    for name in names:
        if getattr(modules[name], "bias", None) is not None:
            continue
        if config is None or not hasattr(config, "to_dict"):
            add.add(name)
            continue
        flag = next((f for f, leaves in BIAS_FLAGS.items() if name.rpartition(".")[2] in leaves
                     and getattr(config, f, None) is not None), None)
        if flag is None:
            unexpressed.append(name)
            continue
        add |= {n for n, m in modules.items() if n.rpartition(".")[2] in BIAS_FLAGS[flag]
                and isinstance(m, nn.Linear) and m.bias is None}
    return sorted(add), unexpressed


def _bias_changes(model: nn.Module, config: object) -> dict[str, bool]:
    """``attention_bias`` / ``mlp_bias`` set to True where every layer of the family now has a bias."""
    changes = {}
    for flag, leaves in BIAS_FLAGS.items():
        layers = [m for n, m in model.named_modules() if n.rpartition(".")[2] in leaves and isinstance(m, nn.Linear)]
        if getattr(config, flag, None) is False and layers and all(m.bias is not None for m in layers):
            changes[flag] = True
    return changes


_CONFIG_FIELDS = {"heads": ("num_attention_heads", "n_head"), "kv_heads": ("num_key_value_heads",),
                  "ffn": ("intermediate_size", "n_inner")}


def _read(config: object, name: str, default: object = None) -> object:
    """``config.name`` or ``default``; per-layer configs raise on a global read of a per-layer field."""
    try:
        return getattr(config, name, default)
    except Exception:  # transformers' AmbiguousGlobalPerLayerAttributeError is not an AttributeError
        return default


def config_changes(model: nn.Module) -> tuple[dict[str, object], list[str]]:
    """The ``model.config`` fields that differ from the module shapes, and the sizes the config cannot
    express (they vary by layer, or it derives them). Nothing is written."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return {}, []
    changes: dict[str, object] = {}
    head_dim = next((m.head_dim for m in model.modules() if _llama_attention(m)), None)
    if head_dim is not None:
        changes["head_dim"] = head_dim
    try:
        embeddings = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):  # vision models have none
        embeddings = None
    hidden = next((f for f in ("hidden_size", "n_embd", "dim", "d_model") if _read(config, f) is not None), None)
    if isinstance(embeddings, nn.Embedding) and hidden:
        changes[hidden] = embeddings.embedding_dim
    changes.update(_bias_changes(model, config))
    has_head_dim = "head_dim" in changes or _read(config, "head_dim") is not None
    unexpressed = []
    for key, values in _layer_sizes(model).items():
        value = _uniform(values)
        fields = [f for f in _CONFIG_FIELDS[key]  # GPT-2's n_inner=None means 4 x hidden: it may be set
                  if _read(config, f) is not None or (f == "n_inner" and hasattr(config, f))]
        if key in ("heads", "kv_heads") and not has_head_dim:
            fields = []  # head size is derived as hidden / heads here: a new head count is not expressible
        if values and (value is None or not fields) and value != _read(config, _CONFIG_FIELDS[key][0], value):
            unexpressed.append(key)
        changes.update({f: value for f in fields if value is not None})
    heads, width = changes.get("num_attention_heads"), changes.get(hidden, _read(config, hidden or ""))
    if isinstance(heads, int) and isinstance(width, int) and width % heads and "heads" not in unexpressed:
        unexpressed.append("heads")  # Hugging Face's config checks refuse a hidden size heads do not divide
    changes = {k: v for k, v in changes.items() if _read(config, k) != v}
    if not unexpressed:
        fitted, unexpressed = _fit_unnamed(model, changes)
        changes |= fitted
    return changes, unexpressed


def update_config(model: nn.Module) -> list[str]:
    """Write new sizes into ``model.config`` where it can express them; return the sizes it cannot.
    ``from_pretrained`` rebuilds the model only when that list is empty; ``secateur.load`` always does,
    replaying the plan."""
    changes, unexpressed = config_changes(model)
    if changes:
        apply_changes(model.config, changes)
    return unexpressed


def apply_changes(config: object, changes: dict[str, object]) -> None:
    """Write ``changes`` (field names, dotted for nested configs such as ``text_config.d_ff``) into ``config``."""
    for name, value in changes.items():
        _set(config, tuple(name.split(".")), value)


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


def _set(config: object, path: tuple[str, ...], value: object) -> None:
    for key in path[:-1]:
        config = getattr(config, key)
    setattr(config, path[-1], value)


def _closer(after: dict[str, tuple], before: dict[str, tuple]) -> bool:
    """Does ``after`` miss fewer dims in all than ``before``, with no tensor missing more? (A field that fixes one
    tensor's size by breaking another dim, e.g. an input width equal by chance to a pruned width, does not fit.)"""
    def off(built: tuple | None, actual: tuple | None) -> int:
        if built is None or actual is None or len(built) != len(actual):
            return 1 + max(len(built or ()), len(actual or ()))
        return sum(a != b for a, b in zip(built, actual, strict=True))

    worse = any(off(*after[n]) > (off(*before[n]) if n in before else 0) for n in after)
    return not worse and sum(off(*v) for v in after.values()) < sum(off(*v) for v in before.values())


def _better_field(model: nn.Module, config: object, wrong: dict[str, tuple], settings: dict) -> tuple | None:
    """A field of ``config`` holding a dense size that a cut changed, whose new value leaves fewer mismatches
    and the same module settings (MLA's ``q_lora_scale`` depends on the rank: such a field is not fitted)."""
    sizes = {(a, b) for built, actual in wrong.values() if built and actual and len(built) == len(actual)
             for a, b in zip(built, actual, strict=True) if a != b}
    for path, value in _int_fields(config):
        for new in sorted(b for a, b in sizes if a == value):
            trial = copy.deepcopy(config)
            _set(trial, path, new)
            fresh = _rebuilt(model, trial)
            after = _mismatches(model, fresh) if fresh is not None else wrong
            if _closer(after, wrong) and _settings(fresh) == settings:
                return path, new, after
    return None


def _fit_unnamed(model: nn.Module, changes: dict[str, object]) -> tuple[dict[str, object], list[str]]:
    """Fit config fields secateur has no name for (T5's ``d_ff``, Falcon's ``ffn_hidden_size``) on a copy of the
    config with ``changes``: while the class built from it (meta device) lacks the pruned shapes, set a field
    that held a changed dense size to the new size if that fits better. Returns the fitted fields (dotted
    paths) and ``["shapes (names)"]`` for what still does not fit."""
    config = copy.deepcopy(model.config)
    apply_changes(config, changes)
    fresh = _rebuilt(model, config)
    if fresh is None:
        return {}, []
    wrong, settings, fitted = _mismatches(model, fresh), _settings(fresh), {}
    while wrong and (found := _better_field(model, config, wrong, settings)) is not None:
        path, new, wrong = found
        _set(config, path, new)
        fitted[".".join(path)] = new
    return fitted, [f"shapes ({', '.join(list(wrong)[:3])}{', ...' if len(wrong) > 3 else ''})"] if wrong else []
