"""Issue 10 item 1 and issue 12 item 6: a folder with config.json is a checkpoint plain transformers loads with
the pruned model's outputs; anything else is named so that from_pretrained fails loudly."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

import secateur as sc
from secateur.cli import app
from secateur.masks import find_mask
from secateur.zoo.hf import bert, gpt2, llama
from tests.test_lm_recipe import _recipe, hf_folder  # noqa: F401  (a fixture: a tiny Llama with a tokenizer)

transformers = pytest.importorskip("transformers")
IDS = torch.randint(0, 100, (2, 12), generator=torch.Generator().manual_seed(0))


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


def test_a_one_shot_pruned_llama_reloads_in_plain_transformers_with_equal_logits(tmp_path):
    model = llama().eval()
    sc.prune(model, sc.Wanda(0.5), calibration=IDS, progress=False)
    sc.save_pretrained(model, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "generation_config.json", "manifest.json",
                                                           "model.safetensors", "secateur.masks.safetensors"]
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(logits(again), logits(model))
    assert float((again.model.layers[0].mlp.up_proj.weight == 0).float().mean()) == 0.5
    rebuilt = sc.load(tmp_path, base=llama)  # secateur gets the masks back too
    assert torch.equal(logits(rebuilt), logits(model)) and find_mask(rebuilt.model.layers[1].self_attn.o_proj)


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_compressed_tensors_int8_loads_in_transformers_equal_to_secateur(tmp_path, pattern):
    pytest.importorskip("compressed_tensors")
    model = llama().eval()
    sc.prune(model, sc.SparseGPT(0.5, pattern=pattern), calibration=IDS, progress=False)
    sc.save_pretrained(model, tmp_path / "int8", compress="int8")
    sc.save_pretrained(model, tmp_path / "fp32")
    config = json.loads((tmp_path / "int8" / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "naive-quantized"
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "int8").eval()
    rebuilt = sc.load(tmp_path / "int8", base=llama)
    assert torch.equal(logits(loaded), logits(rebuilt))  # the same int8 weights, dequantized the same way
    assert (logits(loaded) - logits(model)).abs().max() < 0.05  # int8 rounding only
    weight = loaded.model.layers[0].mlp.down_proj.weight
    zeros = (weight == 0).reshape(weight.shape[0], -1, 4).sum(-1)
    assert bool((zeros >= 2).all()) if pattern == "2:4" else float((weight == 0).float().mean()) >= 0.5
    size = (tmp_path / "int8" / "model.safetensors").stat().st_size
    assert size < 0.45 * (tmp_path / "fp32" / "model.safetensors").stat().st_size


def test_per_layer_sizes_are_zero_padded_and_load_with_equal_outputs(tmp_path):
    model = llama().eval()
    sc.prune(model, sc.Structured(sparsity=0.4, scope="global", units=("channels", "heads")),
             example_inputs={"input_ids": IDS})
    widths = [layer.mlp.up_proj.out_features for layer in model.model.layers]
    assert len(set(widths)) == 2  # per-layer widths: no config field expresses them
    sc.save_pretrained(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["intermediate_size"] == max(widths)
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(again), logits(model), atol=1e-5, rtol=0)
    rebuilt = sc.load(tmp_path, base=llama)
    assert [layer.mlp.up_proj.out_features for layer in rebuilt.model.layers] == widths
    assert torch.equal(logits(rebuilt), logits(model))


def test_bert_heads_pruned_load_in_plain_transformers(tmp_path):
    model = bert().eval()
    sc.prune(model, sc.Structured(sparsity=0.5, units=("heads", "channels")), example_inputs={"input_ids": IDS})
    sc.save_pretrained(model, tmp_path)
    again = transformers.AutoModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(again(input_ids=IDS)[0], model(input_ids=IDS)[0], atol=1e-5, rtol=0)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["kind"] == "huggingface"  # per layer: query, key, value (weights and biases), output columns
    assert len(manifest["huggingface"]["padded"]) == 2 * 7 and json.loads((tmp_path / "config.json").read_text())[
        "num_attention_heads"] == 4


def test_a_folder_transformers_cannot_read_has_no_config_and_fails_loudly(tmp_path):
    model = llama().eval()
    sc.prune(model, sc.Wanda(0.5), calibration=IDS, progress=False)
    sc.save(model, tmp_path)  # sparse: secateur's exact encoding, smaller than any checkpoint transformers reads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "secateur.config.json",
                                                           "secateur.safetensors"]
    with pytest.raises((OSError, ValueError), match="config.json"):
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert "secateur folder" in sc.io.describe(tmp_path) and "sparse" in sc.io.describe(tmp_path)
    dense = llama().eval()
    sc.save(dense, tmp_path / "dense")  # dense and expressible: a checkpoint
    assert torch.equal(logits(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "dense")), logits(dense))


def test_a_shape_no_config_expresses_is_a_named_error(tmp_path):
    model = gpt2().eval()  # GPT-2 derives its head size from n_embd / n_head, and secateur does not pad its fused qkv
    sc.prune(model, sc.Structured(sparsity=0.5, units=("heads",)), example_inputs={"input_ids": IDS})
    with pytest.raises(sc.NotExpressibleError, match="cannot express"):
        sc.save_pretrained(model, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    sc.save(model, tmp_path / "s")
    assert not (tmp_path / "s" / "config.json").exists()
    assert torch.equal(logits(sc.load(tmp_path / "s", base=gpt2).eval()), logits(model))


def test_the_cli_says_which_kind_a_folder_is(tmp_path):
    bert().save_pretrained(tmp_path / "dense")
    spec = f"hf:{tmp_path / 'dense'}"
    runner = CliRunner()
    result = runner.invoke(app, ["prune", spec, "--units", "heads", "--out", str(tmp_path / "s")])
    assert result.exit_code == 0 and "secateur folder" in result.output and "heads" in result.output
    result = runner.invoke(app, ["prune", spec, "--units", "heads", "--out", str(tmp_path / "h"), "--hf"])
    assert result.exit_code == 0 and "Hugging Face checkpoint" in result.output, result.output
    assert "Hugging Face checkpoint" in runner.invoke(app, ["inspect", str(tmp_path / "h")]).output
    assert "Hugging Face checkpoint" in runner.invoke(app, ["load", str(tmp_path / "h"), "--base", spec]).output


def test_an_lm_recipe_writes_no_folder_that_pretends(hf_folder, tmp_path):  # noqa: F811
    recipe = _recipe(hf_folder, steps=[{"prune": {"method": "wanda"}}, {"export": {"formats": ["safetensors", "hf"]}}])
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "out" / "model" / "config.json").exists()
    with pytest.raises((OSError, ValueError), match="config.json"):
        transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model")
    checkpoint = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "hf").eval()
    base = transformers.AutoModelForCausalLM.from_pretrained(hf_folder).eval
    ids = IDS % 50
    with torch.no_grad():
        assert torch.equal(checkpoint(input_ids=ids).logits, sc.load(tmp_path / "out" / "model", base=base)(
            input_ids=ids).logits)
        assert float((checkpoint.model.layers[0].mlp.up_proj.weight == 0).float().mean()) == 0.5


def test_a_config_with_an_infinite_float_is_read_back_as_from_pretrained_reads_it(tmp_path):
    """Bamba's ``time_step_limit`` is (0, inf): transformers writes inf as {"__float__": "Infinity"}, and the
    strict config refused the undecoded value, so ``sc.save`` of the pruned model raised transformers' error."""
    from transformers import BambaConfig, BambaForCausalLM

    config = BambaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=1, attn_layer_indices=[0], mamba_n_heads=4,
                         mamba_d_head=16, mamba_d_state=16, mamba_chunk_size=16, max_position_embeddings=32)
    torch.manual_seed(0)
    model = BambaForCausalLM(config).eval()
    assert model.config.time_step_limit[1] == float("inf")
    ids = torch.randint(0, 64, (2, 8))
    sc.prune(model, sc.Structured(sparsity=0.5, units=("channels",)), example_inputs={"input_ids": ids})
    sc.save(model, tmp_path)
    again = BambaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, model(ids).logits)


def test_a_config_field_equal_to_a_pruned_width_by_chance_is_not_fitted(tmp_path):
    """UnivNet's ``model_in_channels`` (the noise width) equals its kernel predictors' hidden width; pruning the
    predictors must not set it too (0.2's fitter did, and the pruned model no longer ran)."""
    from transformers import UnivNetConfig, UnivNetModel

    def make() -> UnivNetModel:
        torch.manual_seed(0)
        return UnivNetModel(UnivNetConfig(
            model_in_channels=16, model_hidden_channels=8, num_mel_bins=8, resblock_kernel_sizes=[3],
            resblock_stride_sizes=[2], resblock_dilation_sizes=[[1]], kernel_predictor_num_blocks=1,
            kernel_predictor_hidden_channels=16)).eval()

    model = make()
    features, noise = torch.randn(1, 5, 8), torch.randn(1, 5, 16)
    sc.prune(model, sc.Structured(sparsity=0.5), example_inputs={"input_features": features, "noise_sequence": noise})
    assert (model.config.model_in_channels, model.config.kernel_predictor_hidden_channels) == (16, 8)
    out = model(input_features=features, noise_sequence=noise).waveforms
    folder = sc.save(model, tmp_path / "univnet")
    again = sc.load(folder, base=make)
    assert torch.equal(again(input_features=features, noise_sequence=noise).waveforms, out)
