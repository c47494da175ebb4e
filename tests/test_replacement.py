"""Module replacement: nn.MultiheadAttention swapped for SplitMultiheadAttention, so heads and widths prune."""

import itertools

import pytest
import torch
from torch import nn

import secateur as sc
from secateur.plan import Plan
from secateur.replacement import candidates, replace_modules, swapped
from secateur.split_attention import SplitMultiheadAttention
from secateur.zoo.tricky import MHAModel

torch.set_num_threads(1)
X = torch.randn(2, 5, 12)
MASKS = ("none", "bool", "float", "padding", "both", "per-head")


def _masks(kind: str, batch: int, batched: bool, tgt: int = 4, src: int = 5):
    gen = torch.Generator().manual_seed(1)
    attn = {"bool": torch.rand(tgt, src, generator=gen) > 0.7, "float": torch.randn(tgt, src, generator=gen),
            "both": torch.rand(tgt, src, generator=gen) > 0.8,
            "per-head": torch.randn((batch if batched else 1) * 2, tgt, src, generator=gen)}.get(kind)
    padding = None
    if kind in ("padding", "both"):
        padding = torch.zeros(batch, src, dtype=torch.bool)
        padding[:, -1] = True
        padding = padding if batched else padding[0]
    return attn, padding


CASES = list(itertools.product((False, True), (None, (6, 10)), (True, False), (True, False), MASKS, (True, False)))


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize(("batch_first", "kv", "bias", "need_weights", "mask", "batched"), CASES)
def test_split_attention_equals_multihead_attention(batch_first, kv, bias, need_weights, mask, batched, mode):
    torch.manual_seed(0)
    kdim, vdim = kv or (None, None)
    mha = getattr(nn.MultiheadAttention(8, 2, bias=bias, kdim=kdim, vdim=vdim, batch_first=batch_first), mode)()
    split = SplitMultiheadAttention.from_mha(mha)
    assert split.training == mha.training and (split.kdim, split.vdim) == (kdim or 8, vdim or 8)

    def shaped(length, width):
        return torch.randn(((3, length) if batch_first else (length, 3)) + (width,) if batched else (length, width))
    q, k, v = shaped(4, 8), shaped(5, kdim or 8), shaped(5, vdim or 8)
    attn, padding = _masks(mask, 3, batched)
    for average in (True, False):
        kwargs = dict(key_padding_mask=padding, need_weights=need_weights, attn_mask=attn, average_attn_weights=average)
        want, got = mha(q, k, v, **kwargs), split(q, k, v, **kwargs)
        torch.testing.assert_close(got[0], want[0], atol=1e-6, rtol=1e-6)
        assert (got[1] is None) == (want[1] is None)
        if want[1] is not None:
            torch.testing.assert_close(got[1], want[1], atol=1e-6, rtol=1e-6)


def test_split_attention_gradients_dropout_and_causal_hint_match():
    mha = nn.MultiheadAttention(8, 2, dropout=0.3, batch_first=True)
    split = SplitMultiheadAttention.from_mha(mha)
    x = torch.randn(3, 4, 8, requires_grad=True)
    for need_weights in (True, False):  # dropout in train mode draws the same mask from the same seed
        grads = []
        for module in (mha, split):
            torch.manual_seed(1)
            out = module(x, x, x, need_weights=need_weights)[0]
            grads.append(torch.autograd.grad(out.square().sum(), x)[0])
        torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
    causal = nn.Transformer.generate_square_subsequent_mask(4)
    mha.eval(), split.eval()
    for need_weights in (True, False):
        want = mha(x, x, x, attn_mask=causal, is_causal=True, need_weights=need_weights)[0]
        torch.testing.assert_close(split(x, x, x, attn_mask=causal, is_causal=True, need_weights=need_weights)[0],
                                   want, atol=1e-6, rtol=1e-6)
    with pytest.raises(RuntimeError, match="Need attn_mask"):
        split(x, x, x, is_causal=True)


def test_fused_self_attention_fast_path_matches():
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(3, 4, 8)
    with torch.no_grad():  # nn.MultiheadAttention's fused inference path
        torch.testing.assert_close(SplitMultiheadAttention.from_mha(mha).eval()(x, x, x)[0], mha(x, x, x)[0],
                                   atol=1e-6, rtol=1e-6)


def _prune(units=None):
    torch.manual_seed(0)
    model = MHAModel().eval()
    dense = sum(p.numel() for p in model.parameters())
    result = sc.prune(model, sc.Structured(sparsity=0.5, units=units), example_inputs=X)
    return model, result, dense


def test_prune_swaps_and_narrows_heads_and_width(tmp_path):
    model, result, dense = _prune()
    mha = model.mha
    assert isinstance(mha, SplitMultiheadAttention) and result.plan.replacements == ["mha"]
    assert (mha.num_heads, mha.head_dim, mha.embed_dim) == (2, 8, 16)  # half the heads, half the width
    assert mha.q_proj.out_features == mha.num_heads * mha.head_dim == mha.v_proj.out_features
    assert model.inp.out_features == mha.embed_dim == mha.kdim == mha.vdim and model.head.in_features == 16
    assert result.params_after == sum(p.numel() for p in model.parameters()) < 0.5 * dense
    model.train()
    model(X).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    sc.save(model, tmp_path)
    assert not (tmp_path / "config.json").exists()
    loaded = sc.load(tmp_path, base=MHAModel).eval()
    assert isinstance(loaded.mha, SplitMultiheadAttention)
    assert torch.equal(loaded(X), model(X))


def test_heads_unit_prunes_heads_only():
    model, result, _ = _prune(units=("heads",))
    assert (model.mha.num_heads, model.mha.embed_dim, model.mha.out_proj.out_features) == (2, 32, 32)
    assert model.inp.out_features == 32 and result.plan.replacements == ["mha"]


def test_failed_prune_leaves_model_and_module_objects(monkeypatch):
    import secateur.handlers as handlers

    model = MHAModel().eval()
    mha, state = model.mha, {k: v.clone() for k, v in model.state_dict().items()}
    expected = model(X)

    def fail(*args):
        raise RuntimeError("injected after the cuts")
    monkeypatch.setattr(handlers, "add_shifts", fail)
    with pytest.raises(RuntimeError, match="injected"):
        sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=X)
    assert model.mha is mha and type(mha) is nn.MultiheadAttention
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(v, state[k]) for k, v in after.items())
    assert torch.equal(model(X), expected)


def test_analyze_plans_on_the_swap_without_changing_the_model():
    model = MHAModel()
    analysis = sc.analyze(model, X, sc.Structured(sparsity=0.5))
    assert type(model.mha) is nn.MultiheadAttention and analysis.replaced == ["mha"]
    assert analysis.plan.replacements == ["mha"] and len(analysis.units["mha.q_proj"].kept) == 2
    assert {g.key for g in analysis.prunable} == {"inp", "mha.q_proj", "mha.out_proj"}


def test_module_kept_whole_says_why():
    model = MHAModel()
    model.mha = nn.MultiheadAttention(32, 4, add_bias_kv=True, batch_first=True)
    analysis = sc.analyze(model, X)
    assert "add_bias_kv" in analysis.skipped_modules["mha"] and analysis.replaced == []
    result = sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=X)  # today's behaviour: out_proj only
    assert type(model.mha) is nn.MultiheadAttention and result.plan.replacements == []
    assert "add_bias_kv" in result.skipped["mha"]


def test_ignore_keeps_the_module():
    model = MHAModel()
    assert candidates(model, ("mha",)) == ([], {"mha": "matches ignore="})
    sc.prune(model, sc.Structured(sparsity=0.5, ignore=("mha",)), example_inputs=X)
    assert type(model.mha) is nn.MultiheadAttention


def test_plan_round_trip_and_older_plans():
    plan = Plan(cuts={"mha.q_proj.weight": {0: [0, 1]}}, replacements=["mha"])
    data = plan.to_dict()
    assert data["version"] == 2 and data["replacements"] == ["mha"]
    back = Plan.from_dict(data)
    assert (back.replacements, back.cuts) == (["mha"], plan.cuts)
    assert Plan(cuts={"inp.weight": {0: [1]}}).to_dict()["version"] == 1  # nothing new: readable by older versions
    old = {"format": "secateur.plan", "version": 1, "blocks": [], "cuts": {"inp.weight": {"0": [1]}}, "masks": {}}
    assert Plan.from_dict(old).replacements == [] and Plan.from_dict(old).cuts == {"inp.weight": {0: [1]}}
    with pytest.raises(sc.ModelFileError, match="version <= 2"):
        Plan.from_dict({**data, "version": 3})


def test_plan_swap_on_a_model_without_the_module_is_refused():
    with pytest.raises(sc.PruningError, match="does not have"):
        sc.apply(nn.Sequential(nn.Linear(2, 2)), Plan(replacements=["mha"]))
    with pytest.raises(sc.PruningError, match="no equivalent"):
        sc.apply(nn.Sequential(nn.Linear(2, 2)), Plan(replacements=["0"]))


def test_subject_shares_everything_but_the_swapped_module():
    model = MHAModel()
    subject = swapped(model, ["mha"])
    assert type(model.mha) is nn.MultiheadAttention and isinstance(subject.mha, SplitMultiheadAttention)
    assert subject.inp is model.inp and subject.head is model.head and subject is not model
    torch.testing.assert_close(subject(X), model(X), atol=1e-6, rtol=1e-6)
    assert replace_modules(model, ["mha"]).mha is not None and isinstance(model.mha, SplitMultiheadAttention)


def test_iterative_planning_swaps_once():
    model = MHAModel().eval()
    planner = sc.Planner(model, sc.Structured(sparsity=0.25), X)
    first = planner.plan()
    sc.apply(model, first)
    planner.commit(first)
    second = planner.plan()
    assert first.replacements == ["mha"] and second.replacements == []
    sc.apply(model, second)
    assert model.mha.embed_dim < 24 and model(X).shape == (2, 3)


def test_hugging_face_model_with_a_swap_saves_a_secateur_folder(tmp_path):
    from transformers import SiglipVisionConfig, SiglipVisionModel

    def make():
        torch.manual_seed(0)
        config = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                    image_size=16, patch_size=8)
        return SiglipVisionModel(config).eval()
    model, x = make(), {"pixel_values": torch.randn(2, 3, 16, 16)}
    result = sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=x)
    assert result.plan.replacements == ["head.attention"] and model.head.attention.num_heads == 1
    sc.save(model, tmp_path / "out")
    assert not (tmp_path / "out" / "config.json").exists()
    assert "swapped head.attention" in (tmp_path / "out" / "manifest.json").read_text()
    loaded = sc.load(tmp_path / "out", base=make)
    assert torch.equal(loaded(**x).pooler_output, model(**x).pooler_output)
    with pytest.raises(sc.NotExpressibleError, match="swapped head.attention"):
        sc.save_pretrained(model, tmp_path / "hf")


def test_analyze_of_a_model_in_train_mode_captures_the_swap_in_eval_mode(monkeypatch):
    import secateur.planner as planner

    modes, capture = [], planner.capture
    monkeypatch.setattr(planner, "capture", lambda m, *a, **k: modes.append((m.training, m.mha.training)) or
                        capture(m, *a, **k))
    model = MHAModel().train()
    analysis = sc.analyze(model, X, sc.Structured(sparsity=0.5))
    assert modes == [(False, False)] and analysis.replaced == ["mha"]
    assert model.training and model.mha.training
