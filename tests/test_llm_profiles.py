"""Non-uniform sparsity profiles (OWL, block sensitivity, explicit per-layer) and block reconstruction,
on tiny random Llama configs."""

import json

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from typer.testing import CliRunner

import secateur as sc
from secateur.cli import app
from secateur.methods.profiles import spread
from secateur.methods.wanda import ColumnNorms
from secateur.recipe import load_recipe, parse_recipe

IDS = torch.randint(0, 100, (8, 16), generator=torch.Generator().manual_seed(0))


def deep_llama(layers=6):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=64, num_hidden_layers=layers, num_attention_heads=4,
                                         num_key_value_heads=2, intermediate_size=128, vocab_size=100,
                                         max_position_embeddings=32, tie_word_embeddings=True)).eval()
    with torch.no_grad():  # outliers: a few input features much larger in some blocks than others
        for i, layer in enumerate(model.model.layers):
            layer.input_layernorm.weight[: 2 * i] *= 8
    return model


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=40), st.floats(0.05, 0.9), st.floats(0, 0.3))
def test_spread_keeps_the_mean_and_the_band(scores, sparsity, lam):
    lam = min(lam, 0.99 - sparsity)
    out = spread(scores, sparsity, lam)
    assert abs(sum(out) / len(out) - sparsity) < 1e-9
    assert all(max(sparsity - lam, 0) - 1e-12 <= s <= sparsity + lam + 1e-12 for s in out)
    order = np.argsort(scores, kind="stable")
    assert all(out[a] >= out[b] - 1e-12 for a, b in zip(order, order[1:], strict=False))  # more outliers, less pruned


def _dense_outlier_ratios(model, profile):
    """OWL's per-block outlier ratios from a plain dense forward (hooks on every Linear)."""
    norms, handles = {}, []
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and ".layers." in name:
            norms[name] = (m, ColumnNorms(m.in_features))
            handles.append(m.register_forward_pre_hook(lambda mod, a, n=name: norms[n][1].update(
                a[0].reshape(-1, a[0].shape[-1]))))
    with torch.no_grad():
        model(input_ids=IDS, use_cache=False)
    for h in handles:
        h.remove()
    blocks = len(model.model.layers)
    return [profile.block_score([(m.weight.detach(), s.norms()) for n, (m, s) in norms.items()
                                 if n.startswith(f"model.layers.{i}.")], None) for i in range(blocks)]


@pytest.mark.parametrize("method", [sc.Wanda, sc.SparseGPT])
def test_owl_profile_mean_bounds_and_choice(method):
    profile = sc.OWL(lam=0.1, m=3)
    expected = spread(_dense_outlier_ratios(deep_llama(), profile), 0.7, 0.1)
    model = deep_llama()
    result = sc.prune(model, method(0.7, profile=profile, batch_size=3), calibration=IDS, progress=False)
    chosen = list(result.profile.values())
    assert list(result.profile) == [f"model.layers.{i}" for i in range(6)]
    np.testing.assert_allclose(chosen, expected, atol=1e-6)
    assert abs(np.mean(chosen) - 0.7) < 1e-9 and len(set(np.round(chosen, 6))) > 1
    assert all(0.6 - 1e-9 <= s <= 0.8 + 1e-9 for s in chosen)
    for name, reached in result.plan.sparsity().items():  # each layer as its block asks (to one input column)
        block = name.split(".self_attn")[0].split(".mlp")[0]
        assert abs(reached - result.profile[block]) <= 1 / 64 + 1e-9, name


def test_block_sensitivity_profile_mean_and_bounds():
    result = sc.prune(deep_llama(), sc.Wanda(0.6, profile=sc.BlockSensitivity(lam=0.05)), calibration=IDS,
                      progress=False)
    chosen = list(result.profile.values())
    assert abs(np.mean(chosen) - 0.6) < 1e-9 and all(0.55 - 1e-9 <= s <= 0.65 + 1e-9 for s in chosen)
    assert max(chosen) - min(chosen) > 0.05  # a measured profile, not the uniform one


def test_explicit_profile_is_reported_per_block():
    profile = {"model.layers.0.*": 0.2, "model.layers.1.mlp.*": 0.8}
    result = sc.prune(deep_llama(2), sc.Wanda(0.5, profile=profile), calibration=IDS, progress=False)
    mlp, attn = 3 * 64 * 128, 2 * 64 * 64 + 2 * 64 * 32  # gate/up/down weights; q, o and k, v (GQA)
    assert result.profile["model.layers.0"] == pytest.approx(0.2)
    assert result.profile["model.layers.1"] == pytest.approx((0.8 * mlp + 0.5 * attn) / (mlp + attn))


def test_measured_profiles_reject_nm_patterns_and_bad_options():
    with pytest.raises(sc.InvalidSparsityError, match="N:M"):
        sc.Wanda(profile=sc.OWL(), pattern="2:4")
    with pytest.raises(sc.InvalidParameterError, match="unknown option 'lamb'; valid options: lam, m"):
        sc.Method.from_dict({"method": "wanda", "profile": {"owl": {"lamb": 0.1}}})
    with pytest.raises(sc.InvalidSparsityError, match="reaches 1"):
        sc.Wanda(0.95, profile=sc.OWL(lam=0.08))


def test_profile_and_reconstruct_from_python_yaml_and_cli_are_one_method(tmp_path):
    python = sc.SparseGPT(0.6, profile=sc.OWL(lam=0.1, m=3), reconstruct=sc.Reconstruction(epochs=1, lr=0.001))
    step = {"method": "sparsegpt", "sparsity": 0.6, "profile": {"owl": {"lam": 0.1, "m": 3}},
            "reconstruct": {"epochs": 1, "lr": 0.001}}
    recipe = parse_recipe({"name": "r", "model": "zoo:hf-llama-gqa", "train": None, "steps": [{"prune": step}]})
    assert recipe.steps[0].prune.method == python
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"task": "language-model", "model": "llm:smollm2",
                                                     "steps": [{"prune": step}]}))
    assert load_recipe(tmp_path / "r.yaml").steps[0].prune.method == python
    np.savez(tmp_path / "cal.npz", input_ids=IDS.numpy())
    args = ["prune", "zoo:hf-llama-gqa", "--out", str(tmp_path / "out"), "--method", "sparsegpt", "--sparsity", "0.6",
            "--profile", "owl:lam=0.1,m=3", "--reconstruct", "epochs=1,lr=0.001", "--calibration",
            str(tmp_path / "cal.npz"), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "prune.json").read_text())
    assert report["method"] == python.to_dict() and len(report["profile"]) == 2


def _final_hidden(model):
    with torch.no_grad():
        return model.model(input_ids=IDS, use_cache=False).last_hidden_state


@pytest.mark.parametrize("target", ["block", "model"])
@pytest.mark.parametrize("method", [sc.SparseGPT(0.6, batch_size=2), sc.Wanda(pattern="2:4")])
def test_block_reconstruction_brings_outputs_closer_to_the_dense_model(method, target, monkeypatch):
    from dataclasses import replace

    dense = _final_hidden(deep_llama(3))
    plain, tuned = deep_llama(3), deep_llama(3)
    sc.prune(plain, method, calibration=IDS, progress=False)
    losses = []
    real = sc.Reconstruction.fit
    monkeypatch.setattr(sc.Reconstruction, "fit", lambda self, p, s: losses.append(real(self, p, s)) or losses[-1])
    tuning = sc.Reconstruction(epochs=4, lr=1e-3, batch_size=2, target=target)
    result = sc.prune(tuned, replace(method, reconstruct=tuning), calibration=IDS, progress=False)
    assert len(losses) == 3 and all(last < first for first, last in losses)  # each block's error went down
    plain_error = float((_final_hidden(plain) - dense).pow(2).mean())
    assert float((_final_hidden(tuned) - dense).pow(2).mean()) < 0.8 * plain_error
    modules = dict(tuned.named_modules())
    for name, mask in result.plan.masks.items():  # the masks held the sparsity through Adam
        assert torch.equal(modules[name.removesuffix(".weight")].weight != 0, mask), name


def test_a_failed_reconstruction_leaves_the_model_unchanged(monkeypatch):
    model = deep_llama(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    real, calls = sc.Reconstruction.fit, []

    def flaky(self, params, steps):
        calls.append(1)
        if len(calls) == 2:  # the second block
            raise RuntimeError("interrupted")
        return real(self, params, steps)

    monkeypatch.setattr(sc.Reconstruction, "fit", flaky)
    with pytest.raises(RuntimeError, match="interrupted"):
        sc.prune(model, sc.Wanda(0.5, reconstruct=sc.Reconstruction(epochs=1)), calibration=IDS, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
