"""Non-uniform sparsity profiles (OWL, block sensitivity, the loss search, explicit per-layer) and block
reconstruction, on tiny random Llama configs."""

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
from secateur.inputs import token_rows
from secateur.llm.blocks import block_layers
from secateur.llm.search import Masker, levels, next_token_loss, search_profile
from secateur.methods.profiles import Profile, spread
from secateur.methods.wanda import ColumnNorms
from secateur.recipe import load_recipe, parse_recipe
from secateur.selection import keep_top_rows

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


def _search_inputs(model, method):
    """What the engine hands the search: each block's layers and their dense input norms."""
    layers = [block_layers(b, f"model.layers.{i}", method.ignore)[0] for i, b in enumerate(model.model.layers)]
    norms, handles = {}, []
    for lay in (lay for block in layers for lay in block):
        norms[lay.module] = ColumnNorms(lay.module.in_features)
        handles.append(lay.module.register_forward_pre_hook(
            lambda m, a: norms[m].update(a[0].reshape(-1, a[0].shape[-1]))))
    with torch.no_grad():
        model(input_ids=IDS, use_cache=False)
    for h in handles:
        h.remove()
    return layers, [[norms[lay.module].norms() for lay in block] for block in layers]


def test_loss_search_keeps_the_mean_on_its_grid_and_lowers_the_loss():
    method = sc.Wanda(0.7, profile=sc.LossSearch(lam=0.2, generations=4, offspring=3))
    result = sc.prune(deep_llama(), method, calibration=IDS, progress=False)
    chosen = list(result.profile.values())
    assert abs(np.mean(chosen) - 0.7) < 1e-9 and all(0.5 - 1e-9 <= s <= 0.9 + 1e-9 for s in chosen)
    assert all(abs((s - 0.7) / 0.05 - round((s - 0.7) / 0.05)) < 1e-6 for s in chosen)
    assert sc.prune(deep_llama(), method, calibration=IDS, progress=False).profile == result.profile  # seeded
    model = deep_llama()
    layers, norms = _search_inputs(model, method)
    grid, center = levels(0.7, method.profile)
    rows = list(token_rows(IDS))[-2:]
    with torch.no_grad():
        with Masker(layers, norms, grid).applied([center] * 6):
            uniform = next_token_loss(model, rows, None)
        with Masker(layers, norms, grid).applied([grid.index(round(s, 12)) for s in chosen]):
            searched = next_token_loss(model, rows, None)
    assert searched < uniform


def test_search_loss_is_the_log_perplexity_in_chunks(monkeypatch):
    import secateur.llm.search as search

    model = deep_llama(2)
    monkeypatch.setattr(search, "CHUNK", 4)  # 15 positions a row: chunks of 4, 4, 4, 3
    with torch.no_grad():
        loss = next_token_loss(model, list(token_rows(IDS[-3:])), None)
    assert loss == pytest.approx(np.log(sc.perplexity(model, IDS[-3:], progress=False)), rel=1e-5)
    padded = {"input_ids": IDS[-2:], "attention_mask": torch.ones_like(IDS[-2:])}
    padded["attention_mask"][1, 10:] = 0  # the padded positions do not count
    with torch.no_grad():
        masked = next_token_loss(model, list(token_rows(padded)), None)
        expected = (15 * next_token_loss(model, list(token_rows(IDS[-2:-1])), None)
                    + 9 * next_token_loss(model, list(token_rows(IDS[-1:, :10])), None)) / 24
    assert masked == pytest.approx(expected, rel=1e-5)


def test_loss_search_grid_stops_below_one():
    grid, center = levels(0.9, sc.LossSearch(lam=0.25, step=0.05))
    assert grid[center] == 0.9 and grid[0] == pytest.approx(0.65) and grid[-1] == pytest.approx(0.95)
    sc.Wanda(0.9, profile=sc.LossSearch())  # OWL's "reaches 1" does not apply: the grid is capped


def test_loss_search_candidates_are_wanda_masks_at_their_level():
    model, method = deep_llama(2), sc.Wanda(0.5, profile=sc.LossSearch())
    layers, norms = _search_inputs(model, method)
    grid, _ = levels(0.5, method.profile)
    seen = {}
    with torch.no_grad(), Masker(layers, norms, grid).applied([0, len(grid) - 1]):
        for lay in layers[1]:  # after the masking hook
            lay.module.register_forward_pre_hook(lambda m, a: seen.update({m: m.weight.detach().clone()}))
        model(input_ids=IDS, use_cache=False)
    for lay, n in zip(layers[1], norms[1], strict=True):
        expected = keep_top_rows(lay.module.weight.abs() * n[None, :], grid[-1])
        assert torch.equal(seen[lay.module] != 0, expected), lay.name
        assert torch.equal(seen[lay.module][expected], lay.module.weight[expected])  # dense again after


def test_loss_search_leaves_the_dense_weights_even_when_a_forward_fails():
    model, method = deep_llama(), sc.Wanda(0.6, profile=sc.LossSearch(generations=3, offspring=2))
    layers, norms = _search_inputs(model, method)
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        search_profile(model, method.profile, layers, norms, method, IDS, progress=False)
    assert all(torch.equal(v, dense[k]) for k, v in model.state_dict().items())
    down, real, calls = model.model.layers[3].mlp.down_proj, model.model.layers[3].mlp.down_proj.forward, []

    def fail(x):  # inside the layer's forward: after its weight is masked, before it is restored
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("boom")
        return real(x)

    down.forward = fail
    with pytest.raises(RuntimeError, match="boom"), torch.no_grad():
        search_profile(model, method.profile, layers, norms, method, IDS, progress=False)
    del down.forward
    assert all(torch.equal(v, dense[k]) for k, v in model.state_dict().items())


def test_loss_search_errors_name_the_fix(tmp_path):
    with pytest.raises(sc.InvalidParameterError, match=r"step=0.3 must be in \(0, lam=0.25\]"):
        sc.LossSearch(step=0.3)
    with pytest.raises(sc.InvalidParameterError, match="generations=0 must be a positive count"):
        sc.Method.from_dict({"method": "wanda", "profile": {"search": {"generations": 0}}})
    assert sc.Method.from_dict({"method": "wanda", "profile": {"search": {"offspring": 2}}}) == \
        sc.Wanda(profile=sc.LossSearch(offspring=2))
    assert Profile.coerce("search:generations=2,seed=3", text=True) == sc.LossSearch(generations=2, seed=3)  # CLI
    with pytest.raises(sc.PruningError, match="no logits; use a causal language model"):
        sc.prune(deep_llama(2).model, sc.Wanda(0.5, profile=sc.LossSearch(generations=1)), calibration=IDS,
                 progress=False)
    deep_llama(2).save_pretrained(tmp_path / "dense")
    with pytest.raises(sc.PruningError, match="needs the model in memory; for a model pruned from files use"):
        sc.prune_checkpoint(tmp_path / "dense", tmp_path / "out", sc.Wanda(0.5, profile=sc.LossSearch()), IDS,
                            progress=False)
    assert not (tmp_path / "out").exists()


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
