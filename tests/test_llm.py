"""One-shot language-model pruning on tiny random-weight configs (the real SmolLM2 is benchmarked)."""

import pytest
import torch
from torch import nn

import secateur as sc
import secateur.llm.engine as engine
from secateur.llm import load_corpus, perplexity, windows
from secateur.methods.sparsegpt import Hessian
from secateur.methods.wanda import ColumnNorms
from secateur.zoo.hf import bert, gpt2, llama

IDS = torch.randint(0, 100, (4, 16), generator=torch.Generator().manual_seed(0))
METHODS = [sc.Magnitude, sc.Wanda, sc.SparseGPT]


def _block_weights(model):
    _, blocks = engine.decoder_layers(model)
    return {n: (m.weight.T if hasattr(m, "nf") else m.weight) for n, m in blocks.named_modules()
            if isinstance(m, nn.Linear) or hasattr(m, "nf")}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_nm_patterns_are_exact(method, pattern):
    model = llama().eval()
    sc.prune(model, method(pattern=pattern), calibration=IDS)
    n, m = map(int, pattern.split(":"))
    for name, w in _block_weights(model).items():
        assert torch.all((w.reshape(-1, m) != 0).sum(1) == n), name


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("make", [llama, gpt2, bert])
def test_achieved_sparsity_equals_the_request_per_layer(method, make):
    model = make().eval()
    result = sc.prune(model, method(sparsity=0.5), calibration=IDS)
    assert len(result.plan.masks) == len(_block_weights(model)) and set(result.plan.sparsity().values()) == {0.5}
    assert model.lm_head.weight.count_nonzero() == model.lm_head.weight.numel() if hasattr(model, "lm_head") else True


def test_sparsegpt_reconstructs_a_layer_better_than_wanda_and_magnitude():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(64, 64, generator=g) / 8
    x = (torch.randn(2048, 64, generator=g) * torch.logspace(-1, 1, 64)) @ (torch.eye(64) + mix)  # correlated
    w = torch.randn(32, 64, generator=g)
    errors = {}
    norms, hessian = ColumnNorms(64), Hessian(64)
    for stat in (norms, hessian):
        stat.update(x)
    for name, (new, _) in {"magnitude": sc.Magnitude(0.5).prune_weight(w, None, 0.5),
                           "wanda": sc.Wanda(0.5).prune_weight(w, norms, 0.5),
                           "sparsegpt": sc.SparseGPT(0.5, blocksize=16).prune_weight(w, hessian, 0.5)}.items():
        assert float((new == 0).float().mean()) == 0.5
        errors[name] = float((x @ w.T - x @ new.T).norm())
    assert errors["sparsegpt"] < errors["wanda"] < errors["magnitude"]


@pytest.mark.parametrize("batch_size", [None, 1])
def test_block_by_block_equals_a_full_forward_when_nothing_is_pruned(batch_size, tmp_path):
    model = llama().eval()
    seen = {}
    handle = model.model.norm.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    with torch.no_grad():
        model(input_ids=IDS, use_cache=False)
    handle.remove()
    _, blocks = engine.decoder_layers(model)
    stream = engine.open_stream(model, blocks[0], sc.Wanda(batch_size=batch_size), IDS, str(tmp_path))
    assert len(stream.states) == (1 if batch_size is None else 4)
    assert (stream.folder is None) == (batch_size is None)  # several micro-batches: hidden states on disk
    with torch.no_grad():
        for block in blocks:
            sink = stream.next_store()
            engine.forward_block(block, stream, sink)
            stream.store = sink
    hidden = torch.cat([stream.store.get(i) for i in range(len(stream.states))])
    torch.testing.assert_close(hidden, seen["x"], atol=1e-6, rtol=1e-6)


def test_pruned_model_round_trips(tmp_path):
    from transformers import LlamaForCausalLM

    model = llama().eval()
    sc.prune(model, sc.SparseGPT(pattern="2:4"), calibration=IDS)
    logits = model(input_ids=IDS).logits
    sc.save(model, tmp_path / "sc")
    assert torch.equal(sc.load(tmp_path / "sc", base=llama).eval()(input_ids=IDS).logits, logits)
    model.save_pretrained(tmp_path / "hf")
    assert torch.equal(LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()(input_ids=IDS).logits, logits)


def test_failure_mid_model_leaves_it_unchanged(monkeypatch):
    model = llama().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = {"n": 0}
    real = engine.prune_layer

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 9:  # second block
            raise RuntimeError("out of memory")
        return real(*args)

    monkeypatch.setattr(engine, "prune_layer", flaky)
    with pytest.raises(RuntimeError, match="out of memory"):
        sc.prune(model, sc.Wanda(0.5), calibration=IDS)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_errors_name_the_fix():
    with pytest.raises(sc.PruningError, match="calibration="):
        sc.prune(llama(), sc.Wanda(0.5))
    with pytest.raises(sc.InvalidSparsityError, match="N:M"):
        sc.SparseGPT(pattern="4:2")
    with pytest.raises(sc.InvalidParameterError, match="need 30 tokens"):
        windows(torch.arange(10), 10, 3)


def test_corpus_and_perplexity():
    text = load_corpus("stdlib-docstrings")
    assert len(text) > 1_000_000 and text != load_corpus("python-reference")
    model = llama().eval()
    ppl = perplexity(model, IDS)
    assert 50 < ppl < 200  # random weights over 100 tokens: close to uniform


@pytest.mark.parametrize("method", [sc.Wanda(pattern="3:6"), sc.SparseGPT(pattern="3:6", blocksize=126)])
def test_an_nm_pattern_that_does_not_divide_a_layer_is_refused_before_anything_changes(method):
    model = llama().eval()  # hidden size 64: not a multiple of 6
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(sc.PruningError, match=r"multiple of 6.*ignore="):
        sc.prune(model, method, calibration=IDS, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
