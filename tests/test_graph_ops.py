"""Failures the architecture sweep (benchmarks/sweep.py) found, each reproduced on a small module."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import secateur as sc
from secateur.graph import capture


class TwoBranches(nn.Module):
    """Two Linear branches joined by ``join``, then a Linear back to 4 features."""

    def __init__(self, join) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(8, 4)
        self.join = join

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.join(self.a(x), self.b(x)))


def _groups(model: nn.Module, x: torch.Tensor) -> list[str]:
    return sorted(g.describe() for g in capture(model, (x,)).prunable)


def test_max_of_two_tensors_ties_them_like_maximum():
    """``torch.max(a, b)`` (aten ``max.other``, T5's relative buckets) is element-wise: it crashed the walk."""
    x = torch.randn(2, 4)
    expected = _groups(TwoBranches(torch.maximum), x)
    assert expected == ["a.out => b.out => out.in"]
    assert _groups(TwoBranches(torch.max), x) == expected
    assert _groups(TwoBranches(torch.min), x) == expected


class MaxOverDim(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.out = nn.Linear(4, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, _ = self.a(x).max(dim=1)  # (B, T, 8) -> (B, 8): values and indices
        return self.out(values)


def test_max_over_a_dim_gives_values_and_indices_that_keep_channels():
    model, x = MaxOverDim(), torch.randn(2, 5, 4)
    assert _groups(model, x) == ["a.out => out.in"]
    before = model(x)
    result = sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=x)
    assert result.params_after == 4 * 4 + 4 + 4 * 4 + 4
    assert model(x).shape == before.shape


def _t5():
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    return T5EncoderModel(T5Config(vocab_size=100, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)).eval()


T5_IDS = {"input_ids": torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))}


def test_a_config_field_secateur_has_no_name_for_is_fitted_so_from_pretrained_works(tmp_path):
    """T5 keeps its FFN width in ``d_ff``: save said from_pretrained would work, and it failed with size
    mismatches. The field that held the dense width now gets the pruned one (checked by a meta rebuild)."""
    from transformers import T5EncoderModel

    model = _t5()
    sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=T5_IDS)
    assert model.config.d_ff == 64
    model.save_pretrained(tmp_path)
    again = T5EncoderModel.from_pretrained(tmp_path).eval()
    assert torch.equal(again(**T5_IDS)[0], model(**T5_IDS)[0])


def test_sizes_no_config_field_can_hold_are_reported_and_load_still_works(tmp_path):
    """One block's FFN pruned, the other's not: no single ``d_ff`` fits, so the manifest says so."""
    import json

    model = _t5()
    sc.prune(model, sc.Structured(ratios={"encoder.block.0.layer.1.DenseReluDense.wi": 0.5}), example_inputs=T5_IDS)
    sc.save(model, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["kind"] == "secateur" and not manifest["huggingface"]["loadable"]  # no config.json written
    assert ("shapes (encoder.block.0.layer.1.DenseReluDense.wi.weight, encoder.block.0.layer.1.DenseReluDense.wo."
            "weight)") in manifest["huggingface"]["reason"]
    assert not (tmp_path / "config.json").exists()
    assert torch.equal(sc.load(tmp_path, base=_t5)(**T5_IDS)[0], model(**T5_IDS)[0])


def test_a_config_with_per_layer_fields_is_read_without_crashing():
    """Per-layer Hugging Face configs raise (not AttributeError) on a global read of a per-layer field;
    ``update_config`` crashed inside ``prune`` on EmbeddingGemma2. Such a field is simply not expressible."""
    from secateur.adapters import update_config

    class PerLayerConfig:
        hidden_size = 8

        def to_dict(self) -> dict:
            return {}

        def __getattr__(self, name: str):
            if name in ("num_key_value_heads", "head_dim"):
                raise LookupError(f"{name!r} is a per-layer attribute")
            raise AttributeError(name)

    class Attention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.q_proj, self.k_proj, self.head_dim = nn.Linear(8, 8), nn.Linear(8, 4), 2

    model = nn.Sequential(Attention())
    model.config = PerLayerConfig()
    assert update_config(model) == []  # a field it cannot read is one it does not check: no crash
    assert vars(model.config) == {"head_dim": 2}  # the head size the modules use is written


class _Config:
    """A stand-in for a Hugging Face config: attributes and ``to_dict``."""

    def __init__(self, **fields) -> None:
        self.__dict__.update(fields)

    def to_dict(self) -> dict:
        return dict(vars(self))


class _Cache:
    """An output object that no tracer knows (like transformers' DynamicCache)."""


class CachingVlm(nn.Module):
    """Returns a cache unless told ``use_cache=False``, which only a nested config asks for (ColPali's
    ``vlm_config``); ``use_cache`` reaches forward through ``**kwargs``."""

    def __init__(self) -> None:
        super().__init__()
        self.config = _Config(vlm_config=_Config(use_cache=True))
        self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor, **kwargs) -> tuple:
        h = self.b(torch.relu(self.a(x)))
        return (h, _Cache()) if kwargs.get("use_cache", True) else (h,)


def test_use_cache_is_turned_off_when_a_nested_config_asks_for_a_cache():
    """Glm4v, ColPali: the cache in the output made capture fail; the flag lives on a nested config."""
    assert _groups(CachingVlm(), torch.randn(2, 4)) == ["a.out => b.in"]


def test_a_rule_that_fails_blocks_what_its_op_reads_and_says_why():
    """Never a crash inside the engine: the op is reported by name, with the rule's error, and its channels kept."""
    from secateur.graph import RuleTable

    def broken(walk, node):
        raise TypeError("'Node' object is not iterable")

    graph = capture(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), (torch.randn(1, 4),),
                    rules=RuleTable({"relu": broken}))
    assert graph.prunable == []
    assert graph.unknown_ops == ["relu: a coupling rule that failed on this call (TypeError: 'Node' object is not "
                                 "iterable)"]


def test_weight_norm_parametrization_is_counted_by_its_own_parameters():
    """HuBERT's positional conv has ``weight_norm`` as a parametrization (``original0``, ``original1``);
    counting non-zero parameters assumed every parametrized weight was a secateur mask and crashed."""
    from secateur.counting import count_nonzero_params, count_params

    conv = nn.utils.parametrizations.weight_norm(nn.Conv1d(4, 6, 3), dim=2)
    with torch.no_grad():
        conv.bias[:2] = 0
    assert count_params(conv) == 6 + 3 + 6 * 4 * 3  # bias, g (one per kernel position), v
    assert count_nonzero_params(conv) == count_params(conv) - 2


class FusedExperts(nn.Module):
    """Mixtral's experts in transformers 5: 3-D weights indexed by expert (``w[e]``), tokens routed by
    ``topk``, outputs written back with ``index_add_`` into ``zeros_like(hidden)``."""

    def __init__(self, experts: int = 3, hidden: int = 8, inner: int = 6) -> None:
        super().__init__()
        self.router = nn.Linear(hidden, experts, bias=False)
        self.gate_up = nn.Parameter(torch.randn(experts, 2 * inner, hidden) / 3)
        self.down = nn.Parameter(torch.randn(experts, hidden, inner) / 3)
        self.inp, self.out = nn.Linear(4, hidden), nn.Linear(hidden, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        weights, chosen = torch.softmax(self.router(h), -1).topk(1, dim=-1)
        mixed = torch.zeros_like(h)
        for e in range(self.gate_up.shape[0]):
            tokens = torch.where(chosen[:, 0] == e)[0]
            gate, up = nn.functional.linear(h[tokens], self.gate_up[torch.tensor(e)]).chunk(2, dim=-1)
            y = nn.functional.linear(torch.relu(gate) * up, self.down[torch.tensor(e)]) * weights[tokens]
            mixed.index_add_(0, tokens, y)
        return self.out(h + mixed)


def test_fused_moe_experts_prune_the_inner_width_of_every_expert():
    """MoE models had nothing prunable past their experts ('read by index ... no coupling rule')."""
    torch.manual_seed(0)
    model, x = FusedExperts(), torch.randn(12, 4)
    members = [sorted({(m.tensor, m.dim) for m in g.members}) for g in capture(model, (x,)).prunable]
    assert [("down", 2), ("gate_up", 1)] in members  # gate and up halves tied, and the down projection's input
    assert [("down", 1), ("gate_up", 2), ("inp.bias", 0), ("inp.weight", 0), ("out.weight", 1),
            ("router.weight", 1)] in members  # the hidden width, through every expert
    with torch.no_grad():  # inner channels 3..5 of every expert contribute nothing: removing them is exact
        model.gate_up[:, 3:6] = 0
        model.gate_up[:, 9:12] = 0
        model.down[:, :, 3:6] = 0
    before = model(x)
    sc.prune(model, sc.Structured(sparsity=0.5, ignore=("inp", "router")), example_inputs=x)
    assert tuple(model.gate_up.shape) == (3, 6, 8) and tuple(model.down.shape) == (3, 8, 3)
    assert torch.allclose(model(x), before, atol=1e-6)


class Mixed(nn.Module):
    """stack, glu, repeat_interleave and a vector norm over the channels of Linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 8), nn.Linear(4, 8), nn.Linear(4, 6)
        self.d, self.e = nn.Linear(8, 4), nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stacked = torch.stack([self.a(x), self.b(x)], dim=1).sum(1)  # a and b meet channel by channel
        gated = nn.functional.glu(stacked, dim=-1)  # halves of the a/b space tied
        norm = torch.linalg.vector_norm(self.c(x), dim=0)  # reduces the batch dim: channels pass
        wide = self.c(x).repeat_interleave(2, dim=-1) * norm.repeat_interleave(2)
        return self.d(torch.cat([gated, gated], -1)) + self.e(wide)


def test_stack_glu_repeat_interleave_and_vector_norm_keep_channels():
    groups = _groups(Mixed(), torch.randn(3, 4))
    assert groups == ["a.out => b.out => d.in", "c.out => e.in"]


class Bridged(nn.Module):
    """Like EncoderDecoderModel: a projection exists only when the encoder and decoder widths differ, and
    forward reads the config to decide whether to use it."""

    def __init__(self, config: _Config) -> None:
        super().__init__()
        self.config = config
        self.enc, self.cross = nn.Linear(4, config.enc_hidden), nn.Linear(config.enc_hidden, config.dec_hidden)
        if config.enc_hidden != config.dec_hidden:
            self.bridge = nn.Linear(config.enc_hidden, config.dec_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.enc(x))
        return self.cross(h) + (self.bridge(h) if self.config.enc_hidden != self.config.dec_hidden else 0)


def test_fitting_a_config_never_changes_which_modules_the_class_builds():
    """Writing the encoder's pruned width into EncoderDecoderModel's config made forward look for an
    ``enc_to_dec_proj`` the model does not have: a fit that adds or removes parameters is refused."""
    from secateur.adapters import update_config

    model, x = Bridged(_Config(enc_hidden=8, dec_hidden=8)), torch.randn(2, 4)
    sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=x)
    assert (model.enc.out_features, model.config.enc_hidden) == (4, 8)
    assert update_config(model) == ["shapes (enc.weight, enc.bias, cross.weight)"]
    assert model(x).shape == (2, 8)


class ScaledLowRank(nn.Module):
    """Like DeepSeek's MLA: a module setting computed from a size (``q_lora_scale`` from ``q_lora_rank``)."""

    def __init__(self, config: _Config) -> None:
        super().__init__()
        self.config = config
        self.down, self.up = nn.Linear(4, config.rank), nn.Linear(config.rank, 4)
        self.scale = (16 / config.rank) ** 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(x))) * self.scale


def test_fitting_a_config_never_changes_a_module_setting():
    """dots3's from_pretrained differed by 0.8%: the fitted rank changed the scale its attention computes."""
    from secateur.adapters import update_config

    model, x = ScaledLowRank(_Config(rank=8)), torch.randn(2, 4)
    sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=x)
    assert update_config(model) == ["shapes (down.weight, down.bias, up.weight)"]
    assert model.config.rank == 8


@pytest.mark.parametrize("multi_query", [True, False])
def test_gpt_bigcode_attention_bookkeeping_follows_its_fused_projection(tmp_path, multi_query):
    """GPTBigCode's ``c_attn`` holds H*D query features and one key and one value head (multi-query): the GPT-2
    bookkeeping set its width to a third of that, so any plan broke the attention's split."""
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

    def make() -> GPTBigCodeForCausalLM:
        torch.manual_seed(0)
        return GPTBigCodeForCausalLM(GPTBigCodeConfig(vocab_size=100, n_embd=64, n_layer=2, n_head=4, n_inner=128,
                                                      multi_query=multi_query, bos_token_id=0, eos_token_id=0)).eval()

    ids = {"input_ids": torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))}
    model, ffn = make(), make()
    result = sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=ids)
    assert result.params_after < result.params_before and model.transformer.h[0].mlp.c_fc.out_features == 64
    assert torch.equal(sc.load(sc.save(model, tmp_path / "all"), base=make)(**ids).logits, model(**ids).logits)
    sc.prune(ffn, sc.Structured(sparsity=0.5, units=("channels",)), example_inputs=ids)
    sc.save(ffn, tmp_path / "ffn")
    again = GPTBigCodeForCausalLM.from_pretrained(tmp_path / "ffn").eval()
    assert torch.equal(again(**ids).logits, ffn(**ids).logits)


class _Tiled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.out = nn.Linear(4, 8), nn.Linear(16, 3)

    def forward(self, x):
        return self.out(torch.relu(self.inp(x)).repeat(1, 2))


def test_a_tiled_dim_prunes_its_channels_in_every_tile():
    """``x.repeat`` (JetMoE tiles its key heads per expert) blocked the tiled channels."""
    model, x = _Tiled(), torch.randn(5, 4)
    with torch.no_grad():
        model.inp.weight[[1, 6]] = 0
        model.inp.bias[[1, 6]] = 0
        model.out.weight[:, [1, 6, 9, 14]] = 0  # channels 1 and 6 in both tiles: nothing, the least magnitude
    expected = model(x)
    sc.prune(model, sc.Structured(ratios={"inp": 0.25}), example_inputs=(x,))
    assert (model.inp.out_features, model.out.in_features) == (6, 12)
    assert torch.allclose(model(x), expected, atol=1e-6)


def _falcon():
    from transformers import FalconConfig, FalconForCausalLM

    torch.manual_seed(0)
    return FalconForCausalLM(FalconConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2,
                                          num_attention_heads=4)).eval()


def _swin():
    from transformers import SwinConfig, SwinModel

    torch.manual_seed(0)
    return SwinModel(SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4],
                                window_size=4)).eval()


@pytest.mark.parametrize(("make", "inputs"), [
    (_falcon, {"input_ids": torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(0))}),
    (_swin, {"pixel_values": torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))})],
    ids=["falcon", "swin"])
def test_the_issues_falcon_and_swin_prune_half_and_reload_equal(tmp_path, make, inputs):
    """Issue 11's examples, with its configs: Falcon had nothing prunable; Swin's per-stage head list broke the
    reload."""
    model = make()
    result = sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=inputs)
    assert result.params_after < 0.8 * result.params_before
    again = sc.load(sc.save(model, tmp_path), base=make)
    assert torch.equal(again(**inputs)[0], model(**inputs)[0])
