"""A generic config shrinker: a tiny version of any Hugging Face config, from its defaults.

Sizes are set by field name (layers, width, heads, FFN, vocabulary, positions, experts, image size),
per-stage lists are shrunk together (depths to ones, widths and head counts by one factor), lists
indexed by layer are cut to the new depth, and special token ids are moved below the new vocabulary.
Nested configs (``text_config``, ``vision_config``, ``backbone_config``, ...) are shrunk the same way.

>>> from transformers import AutoConfig
>>> c = shrink(AutoConfig.for_model("llama"))
>>> (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size, c.vocab_size)
(64, 2, 4, 128, 256)
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import fields as dataclass_fields

from transformers import PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

VOCAB, LAYERS, POSITIONS, IMAGE = 256, 2, 128, 32


@dataclass(frozen=True)
class Sizes:
    """The sizes of one shrink variant: hidden width, FFN width, attention heads and head size."""

    width: int = 64
    ffn: int = 128
    heads: int = 4
    head_dim: int = 16


SMALL, WIDE = Sizes(), Sizes(width=128, ffn=256, heads=2, head_dim=64)  # WIDE keeps a common head size (64)
ROLES = {  # field name -> its role: a Sizes field, or a fixed largest value
    **dict.fromkeys(("num_hidden_layers", "num_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers",
                     "num_encoder_layers", "num_decoder_layers", "text_layers", "vision_layers", "depth",
                     "num_blocks", "num_hidden_blocks", "num_decoder_blocks", "num_local_layers"), LAYERS),
    **dict.fromkeys(("hidden_size", "d_model", "n_embd", "embed_dim", "dim", "embedding_size", "word_embed_proj_dim",
                     "projection_dim", "text_hidden_size", "encoder_hidden_size", "decoder_hidden_size",
                     "out_hidden_size", "output_hidden_size", "vision_hidden_size", "text_embed_dim",
                     "embedding_dim", "emb_dim", "d_embed", "n_embed", "projector_hidden_size", "mlp_dim_proj",
                     "fusion_hidden_size", "hidden_dim_proj", "latent_dim", "codevector_dim",
                     "proj_codevector_dim", "classifier_proj_size", "xvector_output_dim", "pooler_output_size",
                     "encoder_hidden_dim", "d_inner_proj", "condition_dim", "audio_hidden_size", "adapter_in_dim"),
                    "width"),
    **dict.fromkeys(("intermediate_size", "d_ff", "n_inner", "ffn_dim", "encoder_ffn_dim", "decoder_ffn_dim",
                     "mlp_dim", "hidden_dim", "d_inner", "intermediate_dim", "ffn_hidden_size",
                     "encoder_intermediate_size", "decoder_intermediate_size"), "ffn"),
    **dict.fromkeys(("moe_intermediate_size", "shared_expert_intermediate_size", "expert_intermediate_size"), 32),
    **dict.fromkeys(("num_attention_heads", "n_head", "n_heads", "num_heads", "encoder_attention_heads",
                     "decoder_attention_heads", "attention_heads", "num_attention_heads_text"), "heads"),
    **dict.fromkeys(("head_dim", "d_kv", "d_head", "dim_head", "mamba_d_head", "attention_head_dim",
                     "qk_nope_head_dim", "v_head_dim", "index_head_dim", "linear_key_head_dim",
                     "linear_value_head_dim", "linear_head_dim"), "head_dim"),
    **dict.fromkeys(("qk_rope_head_dim", "rotary_dim"), 8),
    **dict.fromkeys(("kv_lora_rank",), 16), **dict.fromkeys(("q_lora_rank",), 32),
    **dict.fromkeys(("num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"), 4),
    **dict.fromkeys(("num_experts_per_tok", "moe_topk", "top_k", "num_experts_per_token"), 2),
    **dict.fromkeys(("n_group", "topk_group", "n_shared_experts", "first_k_dense_replace"), 1),
    **dict.fromkeys(("vocab_size", "text_vocab_size"), VOCAB),
    **dict.fromkeys(("max_position_embeddings", "n_positions", "max_target_positions", "max_source_positions",
                     "max_seq_len", "seq_length", "n_ctx"), POSITIONS),
    **dict.fromkeys(("image_size", "pretrain_image_size"), IMAGE),
    **dict.fromkeys(("patch_size", "window_size"), 4),
    **dict.fromkeys(("num_queries",), 8),
}
KV_HEADS = ("num_key_value_heads", "n_kv_heads", "num_kv_heads", "multi_query_group_num")
STAGE_DEPTHS = ("depths", "stage_num_blocks", "num_block_repeats", "blocks_per_stage", "stage_numb_of_layers")
STAGE_WIDTHS = ("hidden_sizes", "embed_dims", "embed_dim", "hidden_dims", "dims", "channels", "neck_hidden_sizes",
                "stage_out_channels", "stage_in_channels", "stage_mid_channels", "embed_dim_per_stage",
                "encoder_hidden_sizes", "conv_dim", "tdnn_dim")
STAGE_HEADS = ("num_heads", "num_attention_heads", "num_attention_heads_per_stage", "attention_heads")
FALSE = ("use_timm_backbone", "use_pretrained_backbone")
FIXED = {"attention_type": ("block_sparse", "original_full")}  # BigBird: no block-sparse attention on 8 tokens
LAYER_COUNT = ("num_hidden_layers", "num_layers", "n_layer", "n_layers")
INDEX_LISTS = ("_layers", "_indexes", "_idxs", "_indices", "_layer_ids")
TOKENS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_list(v: object) -> bool:
    return isinstance(v, list | tuple) and bool(v) and all(_is_int(x) for x in v)


def _scalar(name: str, value: int, fields: dict, sizes: Sizes) -> int | None:
    if name in KV_HEADS:
        heads = next((fields[h] for h in ("num_attention_heads", "n_head", "num_heads") if _is_int(fields.get(h))), 0)
        return max(1, sizes.heads * value // heads) if heads and value < heads else min(value, sizes.heads)
    if name in ROLES and not (name in STAGE_HEADS and _int_list(fields.get("depths"))):
        role = ROLES[name]
        return min(value, getattr(sizes, role) if isinstance(role, str) else role)
    return None


def _declared(model_type: object) -> set[str] | None:
    """The dataclass fields of a config class: the others (Swin's ``hidden_size``) are derived, never set."""
    cls = CONFIG_MAPPING.get(model_type) if isinstance(model_type, str) and model_type in CONFIG_MAPPING else None
    return {f.name for f in dataclass_fields(cls)} if cls is not None else None


def _factor(widths: list[int]) -> int:
    """The largest divisor of every width that leaves the first about 16 (and multiples of 4 multiples of 4)."""
    by4 = all(x % 4 == 0 for x in widths)
    for f in range(max(1, widths[0] // 16), 1, -1):
        if all(x % f == 0 and (not by4 or (x // f) % 4 == 0) for x in widths):
            return f
    return 1


def _stage_lists(fields: dict) -> dict[str, object]:
    """Per-stage lists: one block per stage, widths and head counts divided by one common factor."""
    changes: dict[str, object] = {}
    for name in STAGE_DEPTHS:
        if _int_list(fields.get(name)):
            changes[name] = [1] * len(fields[name])
    staged = _int_list(fields.get("depths"))
    widths = {n: fields[n] for n in STAGE_WIDTHS if _int_list(fields.get(n)) or (staged and _is_int(fields.get(n)))}
    for name, v in widths.items():
        f = _factor(list(v) if isinstance(v, list | tuple) else [v])
        changes[name] = [x // f for x in v] if isinstance(v, list | tuple) else v // f
    for name in STAGE_HEADS:
        v = fields.get(name)
        if _int_list(v) and widths:
            changes[name] = [max(1, x // v[0]) for x in v]
    return changes


def _layer_lists(fields: dict, changes: dict, sizes: Sizes) -> dict[str, object]:
    """Per-layer lists keep their first entries and their last; lists of layer indices drop the deep ones;
    dicts keyed by layer index keep the shallow layers, the last layer's entry moving to the new last."""
    name = next((n for n in LAYER_COUNT if _is_int(fields.get(n)) and n in changes), None)
    if name is None or _int_list(fields.get("depths")):  # a staged model counts stages there
        return {}
    old, new = fields[name], changes[name]
    out: dict[str, object] = {}
    for key, v in fields.items():
        if key in changes or not v:
            continue
        if isinstance(v, list | tuple) and len(v) == old and old != new:
            out[key] = [*v[:new - 1], v[-1]]
        elif isinstance(v, list | tuple) and key.endswith(INDEX_LISTS) and _int_list(v) and "out_" not in key:
            out[key] = [i for i in v if i < new] or [new - 1]
        elif isinstance(v, dict) and all(isinstance(k, str) and k.isdigit() for k in v):
            out[key] = _by_layer(v, old, new, sizes)
    return out


def _by_layer(v: dict, old: int, new: int, sizes: Sizes) -> dict:
    one = lambda e: shrink_dict(e, sizes) if isinstance(e, dict) else e  # noqa: E731
    width = len(next(iter(v)))
    kept = {k: one(e) for k, e in v.items() if int(k) < new - 1}
    if (last := v.get(str(old - 1).zfill(width))) is not None:
        kept[str(new - 1).zfill(width)] = one(last)
    return kept


def changes_for(fields: dict, sizes: Sizes, moved: dict[int, int]) -> dict[str, object]:
    """The new values that make the config dict ``fields`` tiny (nested config dicts shrunk too)."""
    changes: dict[str, object] = {}
    declared = _declared(fields.get("model_type"))
    for name, value in fields.items():
        if isinstance(value, dict) and "model_type" in value:
            changes[name] = shrink_dict(value, sizes, moved)
        elif name in FALSE and value:
            changes[name] = False
        elif name in FIXED and value == FIXED[name][0]:
            changes[name] = FIXED[name][1]
        elif declared is not None and name not in declared:
            continue
        elif _is_int(value) and (new := _scalar(name, value, fields, sizes)) is not None and new != value:
            changes[name] = new
        elif name in ("image_size", "pretrain_image_size") and _int_list(value):
            changes[name] = [min(x, IMAGE) for x in value]
    changes.update(_stage_lists(fields))
    changes.update(_layer_lists(fields, changes, sizes))
    changes.update(_coupled(fields, changes, sizes))
    return changes


def _coupled(fields: dict, changes: dict, sizes: Sizes) -> dict[str, object]:
    """Sizes other sizes must add up to: Mamba heads x head size = expand x hidden; M-RoPE sections sum to half
    the head size; backbone outputs are named after stages that may be gone now."""
    new = {**fields, **changes}
    out: dict[str, object] = {}
    if _is_int(new.get("mamba_n_heads")) and _is_int(new.get("mamba_d_head")) and _is_int(new.get("hidden_size")):
        out["mamba_n_heads"] = int(new.get("mamba_expand", 2) * new["hidden_size"]) // new["mamba_d_head"]
    if all(_is_int(fields.get(n)) for n in ("expand", "num_heads", "head_dim", "hidden_size")) and \
            fields["num_heads"] * fields["head_dim"] == fields["expand"] * fields["hidden_size"]:  # Mamba-2
        out["num_heads"] = new["expand"] * new["hidden_size"] // new["head_dim"]
    rope = fields.get("rope_parameters")
    if isinstance(rope, dict) and _int_list(rope.get("mrope_section")):
        half, section = new.get("head_dim", sizes.head_dim) // 2, rope["mrope_section"]
        scaled = [max(1, x * half // sum(section)) for x in section]
        scaled[0] += half - sum(scaled)
        out["rope_parameters"] = {**rope, "mrope_section": scaled}
    if _is_int(fields.get("qk_rope_head_dim")) and fields.get("head_dim") == fields["qk_rope_head_dim"]:
        out["head_dim"] = new["qk_rope_head_dim"]  # MLA: the head size given to RoPE
    if all(_is_int(fields.get(n)) for n in ("qk_head_dim", "qk_rope_head_dim", "qk_nope_head_dim")):
        out["qk_head_dim"] = new["qk_rope_head_dim"] + new["qk_nope_head_dim"]
    if any(n in changes for n in LAYER_COUNT) and not _int_list(fields.get("depths")):
        out.update({n: None for n in ("out_features", "out_indices") if fields.get(n)})
    return out


def _token_fields(fields: dict) -> dict[str, object]:
    return {n: v for n, v in fields.items() if ("token_id" in n or "token_index" in n) and
            (_is_int(v) or _int_list(v))}


def _move_tokens(fields: dict, moved: dict[int, int]) -> dict[str, object]:
    """Token ids near or above the new vocabulary go to distinct ids just below it."""
    changes = {}
    for name, v in _token_fields(fields).items():
        ids = list(v) if isinstance(v, list | tuple) else [v]
        for i in ids:
            if i >= VOCAB - 32 and i not in moved:
                moved[i] = VOCAB - 1 - len(moved)
        if any(i in moved for i in ids):
            new = [moved.get(i, i) for i in ids]
            changes[name] = new if isinstance(v, list | tuple) else new[0]
    return changes


def shrink_dict(fields: dict, sizes: Sizes = SMALL, moved: dict[int, int] | None = None) -> dict:
    """A tiny version of a config dict (``config.to_dict()``); ``moved`` collects special ids that moved."""
    moved = {} if moved is None else moved
    changes = changes_for(fields, sizes, moved)
    return {**fields, **changes, **_move_tokens(fields, moved)}


def shrink(config: PretrainedConfig, sizes: Sizes = SMALL) -> PretrainedConfig:
    """A tiny copy of ``config`` (see the module docstring)."""
    return type(config).from_dict(shrink_dict(config.to_dict(), sizes))


def _walk(config: PretrainedConfig) -> list[PretrainedConfig]:
    subs = [v for v in vars(config).values() if isinstance(v, PretrainedConfig)]
    return [config, *(c for s in subs for c in _walk(s))]


def special_ids(config: PretrainedConfig) -> set[int]:
    """Every special token id named anywhere in ``config`` (example inputs avoid them)."""
    ids: set[int] = set()
    for c in _walk(config):
        for v in _token_fields(c.to_diff_dict() | {k: getattr(c, k, None) for k in TOKENS}).values():
            ids |= set(v) if isinstance(v, list | tuple) else {v}
    return ids


def smallest(config: PretrainedConfig, names: tuple[str, ...], default: int) -> int:
    """The smallest positive int under any of ``names`` in ``config`` or its nested configs (lists included)."""
    found = []
    for c in _walk(config):
        values = [getattr(c, n, None) for n in names]
        found += [v for v in values if _is_int(v) and v > 0] + [min(v) for v in values if _int_list(v)]
    return min(found, default=default)
