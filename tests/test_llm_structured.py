"""Structured compression of causal language models (issue 13): criteria from calibration activations,
width and depth targets, heads under grouped-query attention, bias compensation, reloading."""

import pytest
import torch

import secateur as sc
from secateur.criteria import CRITERIA
from secateur.methods.structured import LM_CRITERION
from secateur.widths import gqa_layout
from tests.conftest import tiny_llama_folder

IDS = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(1))
CALIBRATION = [row[None] for row in IDS]
WIDTH = sorted(n for n, c in CRITERIA.items() if not c.blocks_only and n not in ("random", "fpgm"))
DEPTH = sorted(n for n, c in CRITERIA.items() if c.blocks_only)


def llama(heads: int = 9, kv: int = 3, layers: int = 3):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(hidden_size=72, num_hidden_layers=layers, num_attention_heads=heads,
                                        num_key_value_heads=kv, head_dim=8, intermediate_size=96, vocab_size=100,
                                        max_position_embeddings=64, tie_word_embeddings=True)).eval()


def qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=2, intermediate_size=96, vocab_size=100,
                                        max_position_embeddings=64, tie_word_embeddings=False)).eval()


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=100, n_positions=64)).eval()


ARCHS = {"llama": llama, "qwen2": qwen2, "gpt2": gpt2}


def _plant(model, group, unit: int) -> None:
    """Zero every weight ``unit`` of ``group`` occupies: it then contributes nothing."""
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for m in group.members:
            params[m.tensor].index_fill_(m.dim, torch.tensor(m.indices([unit])), 0.0)


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("criterion", WIDTH)
def test_every_criterion_ranks_a_planted_unit_last(arch, criterion):
    """In each kind of group (FFN channels, heads, hidden size) a unit whose weights are all zero scores lowest
    (under GQA: every query head of the planted key-value group)."""
    torch.manual_seed(0)
    model = ARCHS[arch]()
    planner = sc.Planner(model, sc.Structured(sparsity=0.5, criterion=criterion), IDS[:1], CALIBRATION)
    planted = {}
    for kind in ("channels", "heads", "hidden"):
        group = next(g for g in planner.groups if g.kind == kind)
        _plant(model, group, 1)
        planted[group.id] = gqa_layout(group)
    for gid, layout in planted.items():
        scores = planner.scores[gid]
        expected = set(range(layout[1], 2 * layout[1])) if layout else {1}
        assert set(torch.argsort(scores, stable=True)[: len(expected)].tolist()) == expected, (gid, scores)


@pytest.mark.parametrize("criterion", DEPTH + ["flap"])
def test_depth_criteria_remove_a_planted_identity_block(criterion):
    torch.manual_seed(0)
    model = llama(layers=4)
    with torch.no_grad():
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()  # block 2 passes its input through unchanged
    expected = model(IDS).logits
    result = sc.prune(model, sc.Structured(sparsity=0.25, units=("blocks",), criterion=criterion),
                      example_inputs=IDS[:1], calibration=CALIBRATION)
    assert result.plan.blocks == ["model.layers.2"] and len(model.model.layers) == 3
    torch.testing.assert_close(model(IDS).logits, expected, atol=1e-5, rtol=0)


def _non_embedding(model) -> int:
    return sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()


@pytest.mark.parametrize(("scope", "units"), [("layer", ("channels",)), ("global", ("channels",)),
                                               ("global", ("heads", "channels"))])
@pytest.mark.parametrize("criterion", ["flap", "minitron", "taylor"])
def test_width_target_within_one_rounding_step(scope, units, criterion):
    model = llama()
    dense = _non_embedding(model)
    planner = sc.Planner(model, sc.Structured(target=0.5, units=units, scope=scope, criterion=criterion), IDS[:1],
                         CALIBRATION)
    # one rounding step: a unit of every group (layer scope), else the costliest move of one group
    step = sum(u.cost for u in planner.selection) if scope == "layer" else max(
        u.cost * (u.heads[1] if u.heads else 1) for u in planner.selection)
    result = sc.prune(model, sc.Structured(target=sc.Params(0.75, embeddings=False), units=units, scope=scope,
                                           criterion=criterion), example_inputs=IDS[:1], calibration=CALIBRATION)
    kept = _non_embedding(model)
    assert 0.75 * dense - step <= kept <= 0.75 * dense and result.params_after == result.predicted[0]
    assert model(IDS).logits.shape == (4, 16, 100)


@pytest.mark.parametrize("criterion", DEPTH)
def test_depth_target_removes_the_fewest_blocks_that_reach_it(criterion):
    model = llama(layers=6)
    dense, block = _non_embedding(model), sum(p.numel() for p in model.model.layers[0].parameters())
    result = sc.prune(model, sc.Structured(target=sc.Params(0.6, embeddings=False), units=("blocks",),
                                           criterion=criterion), example_inputs=IDS[:1], calibration=CALIBRATION)
    assert len(result.plan.blocks) == 3 and 0.6 * dense - block <= _non_embedding(model) <= 0.6 * dense
    assert model.config.num_hidden_layers == 3
    if criterion == "angular":  # a run of consecutive blocks
        indices = sorted(int(b.rpartition(".")[2]) for b in result.plan.blocks)
        assert indices == list(range(indices[0], indices[0] + 3))


def test_gqa_heads_are_removed_inside_groups_and_reopen_with_from_pretrained(tmp_path):
    """SmolLM2's layout: 9 query heads in 3 key-value groups. 25% of heads rounds to 3 query heads (one per
    group, or one whole group), which Hugging Face's config can express."""
    from transformers import AutoModelForCausalLM

    model = llama()
    sc.prune(model, sc.Structured(sparsity=0.25, units=("heads",), criterion="minitron"), example_inputs=IDS[:1],
             calibration=CALIBRATION)
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.out_features // 8 * attn.k_proj.out_features // 8 in (6 * 3, 6 * 2)
    assert attn.num_key_value_groups * attn.k_proj.out_features == attn.q_proj.out_features
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(again(IDS).logits, model(IDS).logits)
    assert again.generate(IDS[:1], max_new_tokens=4, do_sample=False).shape == (1, 20)


def test_heads_beside_channels_are_not_silently_kept():
    """Issue 13: heads at 25% with channels removed no head on SmolLM2's 9-in-3 layout."""
    model = llama()
    sc.prune(model, sc.Structured(sparsity=0.25, units=("heads", "channels")), example_inputs=IDS[:1])
    assert all(layer.self_attn.q_proj.out_features == 6 * 8 for layer in model.model.layers)
    assert all(layer.mlp.up_proj.out_features == 72 for layer in model.model.layers)


def test_heads_a_fraction_cannot_remove_raise_a_named_error():
    with pytest.raises(sc.PruningError, match=r"9 query heads in 3 key-value groups.*rounds to 0"):
        sc.prune(llama(), sc.Structured(sparsity=0.1, units=("heads",)), example_inputs=IDS[:1])


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_flap_compensation_keeps_the_mean_output_and_reloads(arch, tmp_path):
    """Uniform widths with FLAP's bias compensation: from_pretrained reopens the pruned model (Llama: the
    config's attention_bias / mlp_bias switch on; Qwen2 cannot say so and compensation is skipped, with the
    reason), sc.load always does, with equal logits."""
    from transformers import AutoModelForCausalLM

    model = ARCHS[arch]()
    result = sc.prune(model, sc.Structured(sparsity=0.5, units=("channels",), scope="layer", criterion="flap"),
                      example_inputs=IDS[:1], calibration=CALIBRATION)
    compensated = bool(result.plan.biases) or arch == "gpt2"
    assert compensated == (arch != "qwen2")
    assert any("bias compensation" in k for k in result.skipped) == (arch == "qwen2")
    model.save_pretrained(tmp_path / "hf")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    torch.testing.assert_close(again(IDS).logits, model(IDS).logits, atol=1e-6, rtol=0)
    sc.save(model, tmp_path / "sc")
    loaded = sc.load(tmp_path / "sc", base=ARCHS[arch]).eval()
    assert torch.equal(loaded(IDS).logits, model(IDS).logits)


def test_compensation_restores_the_mean_of_the_reading_layer():
    """After removing half the hidden units of an MLP, the last layer's mean output over the calibration data
    is unchanged with compensation (it is linear in the removed inputs), and shifted without it."""
    torch.manual_seed(0)
    x = torch.randn(64, 6) + 1.0
    outputs = {}
    for compensate in (True, False):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        dense = net(x).mean(0)
        sc.prune(net, sc.Structured(sparsity=0.5, criterion=sc.criteria.base.criterion_class("flap")(compensate)),
                 example_inputs=x[:1], calibration=[x])
        outputs[compensate] = (net(x).mean(0) - dense).abs().max().item()
    assert outputs[True] < 1e-5 < outputs[False]


def test_global_scope_gives_non_uniform_widths_that_sc_load_rebuilds(tmp_path):
    model = llama()
    method = sc.Structured(target=sc.Params(0.7, embeddings=False), units=("heads", "channels"), scope="global",
                           criterion="minitron")
    sc.prune(model, method, example_inputs=IDS[:1], calibration=CALIBRATION)
    widths = {layer.mlp.up_proj.out_features for layer in model.model.layers}
    assert len(widths) > 1
    sc.save(model, tmp_path)
    assert torch.equal(sc.load(tmp_path, base=llama).eval()(IDS).logits, model(IDS).logits)


def test_causal_lm_with_calibration_defaults_to_a_data_aware_criterion():
    method = sc.Structured(sparsity=0.5)
    assert sc.Planner(llama(), method, IDS[:1], CALIBRATION).criterion.name == LM_CRITERION
    assert sc.Planner(llama(), method, IDS[:1]).criterion.name == "magnitude"
    assert CRITERIA[LM_CRITERION].needs


def test_analyze_shows_the_width_plan_and_the_blocks_before_anything_changes():
    model = llama(layers=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    width = sc.analyze(model, IDS[:1], sc.Structured(target=sc.Params(0.8, embeddings=False), units=("heads",
                       "channels"), criterion="flap"), calibration=CALIBRATION)
    depth = sc.analyze(model, IDS[:1], sc.Structured(sparsity=0.5, units=("blocks",), criterion="angular"),
                       calibration=CALIBRATION)
    assert width.plan.cuts and width.units and width.predicted[0] < width.dense[0]
    assert len(depth.plan.blocks) == 2 and "remove block" in depth.to_markdown()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_iterative_rounds_follow_query_heads_removed_inside_groups():
    model = llama()
    results = sc.iterative_prune(model, sc.Structured(sparsity=0.6, units=("heads",), criterion="magnitude"),
                                 rounds=2, recover=lambda m: None, example_inputs=IDS[:1], progress=False)
    assert len(results) == 2 and model.model.layers[0].self_attn.q_proj.out_features < 9 * 8
    assert model(IDS).logits.shape == (4, 16, 100)


def test_block_criteria_refuse_width_units():
    with pytest.raises(sc.InvalidParameterError, match="whole blocks only"):
        sc.Structured(sparsity=0.5, criterion="angular")


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory):
    return tiny_llama_folder(tmp_path_factory.mktemp("tiny-lm"), hidden_size=48, num_hidden_layers=5,
                             num_attention_heads=6, head_dim=8, tie_word_embeddings=True)


@pytest.mark.parametrize("example", ["smollm2-width.yaml",
                                     pytest.param("smollm2-depth.yaml", marks=pytest.mark.slow)])
def test_example_recipes_run_on_a_tiny_llama_from_the_cli(example, lm_folder, tmp_path):
    """The shipped SmolLM2 width / depth recipes, pointed at a tiny Llama with SmolLM2's tokenizer: pruned to
    the target, speed measured dense and pruned, saved, exported to ONNX that matches torch."""
    import json
    from pathlib import Path

    import yaml
    from typer.testing import CliRunner

    from secateur.cli import app
    from secateur.onnx_export import OnnxModel

    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / example).read_text())
    recipe.update(model=f"hf:{lm_folder}", calibration={"windows": 4, "length": 32},
                  evaluation={"windows": 2, "length": 32}, speed={"prompt": 16, "new_tokens": 2, "repeats": 1})
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    pruned = json.loads((tmp_path / "out" / "report.json").read_text())["stages"][1]["metrics"]
    assert pruned["params"] < pruned["params_before"] and pruned["decode speedup"] > 0
    assert bool(pruned["blocks_removed"]) == (example == "smollm2-depth.yaml")
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model").eval()  # no secateur needed
    ids = torch.randint(5, 1000, (1, 32))  # the export traced a calibration window of 32 tokens
    onnx = OnnxModel(tmp_path / "out" / "model.onnx")
    torch.testing.assert_close(onnx(ids), loaded(ids).logits, atol=1e-4, rtol=1e-4)


def test_a_head_count_the_hidden_size_does_not_divide_is_reported_unexpressed():
    """Hugging Face's Llama config refuses hidden % heads != 0 (even with head_dim): from_pretrained cannot
    rebuild such a model, so the head count is reported as not expressible (sc.load still rebuilds it)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from secateur.adapters import config_changes

    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                         num_key_value_heads=4, head_dim=16, intermediate_size=32,
                                         vocab_size=100)).eval()
    sc.prune(model, sc.Structured(sparsity=0.25, units=("heads",)), example_inputs=IDS[:1])
    assert model.model.layers[0].self_attn.q_proj.out_features == 3 * 16 and config_changes(model)[1] == ["heads"]


def test_generation_speed_measures_models_in_turn(monkeypatch):
    """Dense and pruned are measured alternately (a busy machine slows both alike); tokens/s are tokens over
    the measured seconds, medians over the repeats."""
    from secateur import lm_speed

    calls, seconds = [], iter([2.0, 4.0, 1.0, 2.0, 4.0, 8.0] * 3)

    def fake(model, prompt, new_tokens):
        calls.append(model)
        return (0.0, 0.0) if new_tokens == 8 else (next(seconds), next(seconds))

    monkeypatch.setattr(lm_speed, "time_generation", fake)
    speed = lm_speed.generation_speed({"a": "A", "b": "B"}, torch.zeros(1, 512, dtype=torch.long), 128, repeats=3)
    assert calls == ["A", "B"] + ["A", "B"] * 3
    assert speed["a"].prefill == 256 and speed["a"].decode == 32 and speed["b"].decode == 32
    assert speed["b"].prefill_range == (512 / 4, 512)


def test_generation_timing_runs_the_cached_decode_loop():
    from secateur.lm_speed import time_generation

    model, counted = llama(), []
    handle = model.model.register_forward_pre_hook(lambda m, args, kwargs: counted.append(kwargs["input_ids"].shape),
                                                   with_kwargs=True)
    prefill, decode = time_generation(model, IDS[:1], new_tokens=5)
    handle.remove()
    assert counted == [(1, 16)] + [(1, 1)] * 5  # one prefill, then one token per step with the cache
    assert prefill > 0 and decode > 0
