"""Streaming calibration: statistics that stream over micro-batches equal the one-shot ones, both pass
schedules give equal weights, and hidden states between blocks are spilled to disk."""

import gc
import threading
import weakref
from dataclasses import dataclass, field, replace

import pytest
import torch
from greenlet import greenlet
from torch import nn
from torch.nn.modules.module import register_module_forward_hook

import secateur as sc
import secateur.llm.engine as engine
import secateur.llm.measure as measure
import secateur.llm.passes as passes
import secateur.llm.states as states
from secateur.methods.sparsegpt import Hessian
from secateur.methods.wanda import ColumnNorms
from secateur.zoo.hf import gpt2, llama

IDS = torch.randint(0, 100, (6, 16), generator=torch.Generator().manual_seed(0))


def _linears(model):
    _, blocks = engine.decoder_layers(model)
    return {n: m.weight.detach().clone() for n, m in blocks.named_modules()
            if isinstance(m, nn.Linear) or hasattr(m, "nf")}


def _pruned(make, method, monkeypatch=None, held=None):
    torch.manual_seed(0)
    model = make().eval()
    if held is not None:
        monkeypatch.setattr(engine, "HELD_BYTES", held)
    result = sc.prune(model, method, calibration=IDS, progress=False)
    return _linears(model), result


@pytest.mark.parametrize("statistic", [ColumnNorms, Hessian])
def test_a_statistic_streamed_over_batches_equals_one_update(statistic):
    x = torch.randn(300, 24, generator=torch.Generator().manual_seed(1)) * 3
    whole, parts = statistic(24), statistic(24)
    whole.update(x)
    for chunk in x.split(7):
        parts.update(chunk)
    a, b = (s.norms() if statistic is ColumnNorms else s.matrix() for s in (whole, parts))
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


class Both:
    """Input norms and Hessian of one layer, streamed."""

    def __init__(self, n):
        self.parts = (ColumnNorms(n), Hessian(n))

    def update(self, x):
        for part in self.parts:
            part.update(x)


@dataclass(frozen=True)
class Recorder(sc.OneShot):
    """Records every statistic it is given and prunes by magnitude, so every run sees the same inputs."""

    name = "test-recorder"
    seen: list = field(default_factory=list, compare=False, repr=False)

    def new_statistic(self, in_features):
        return Both(in_features)

    def prune_weight(self, weight, statistic, sparsity):
        self.seen.append((statistic.parts[0].norms(), statistic.parts[1].matrix()))
        keep = self.keep_mask(weight.abs(), sparsity, per_row=True)
        return weight * keep, keep


@pytest.mark.parametrize("make", [llama, gpt2])
def test_streamed_statistics_equal_one_shot_statistics(make):
    whole, streamed = Recorder(batch_size=len(IDS)), Recorder(batch_size=1)
    for method in (whole, streamed):
        torch.manual_seed(0)
        sc.prune(make().eval(), method, calibration=IDS, progress=False)
    assert len(whole.seen) == len(streamed.seen) == (14 if make is llama else 8)  # every layer of 2 blocks
    for (n1, h1), (n2, h2) in zip(whole.seen, streamed.seen, strict=True):
        torch.testing.assert_close(n2, n1, atol=0, rtol=1e-5)
        torch.testing.assert_close(h2, h1, atol=1e-5 * float(h1.abs().max()), rtol=0)


@pytest.mark.parametrize("method", [sc.Wanda(0.5), sc.SparseGPT(pattern="2:4")])
def test_streamed_micro_batches_give_the_one_batch_weights(method):
    """Weights, not only statistics (SparseGPT's block-wide mask choice can flip a near-tie at 1e-7, so its
    unstructured weights are compared through the statistics above)."""
    whole, _ = _pruned(llama, replace(method, batch_size=len(IDS)))
    streamed, result = _pruned(llama, replace(method, batch_size=1))
    assert whole.keys() == streamed.keys() and len(whole) == len(result.plan.masks) == 14
    for name in whole:
        torch.testing.assert_close(streamed[name], whole[name], atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("method", [sc.Wanda(0.5, batch_size=2), sc.SparseGPT(0.6, batch_size=1)])
def test_one_pass_and_staged_schedules_are_identical(method, monkeypatch):
    calls = {"lockstep": 0, "staged": 0}
    for name in calls:
        real = getattr(engine, name)
        monkeypatch.setattr(engine, name, lambda *a, name=name, real=real: (calls.__setitem__(name, calls[name] + 1),
                                                                           real(*a))[1])
    one_pass, _ = _pruned(llama, method, monkeypatch, held=2**40)
    staged, _ = _pruned(llama, method, monkeypatch, held=0)
    assert calls == {"lockstep": 2, "staged": 2}  # two blocks each way
    assert all(torch.equal(one_pass[n], staged[n]) for n in one_pass)
    assert passes.FORWARD.get(None) is None  # no forward (and the layer input it last saw) outlives its pass


def test_every_forward_runs_in_the_calling_thread_and_freed_memory_goes_back_once_per_block(monkeypatch):
    """The micro-batches' forwards are greenlets of the calling thread, so they share its malloc arena (threads
    kept one arena each, which held what their forwards freed); the engine trims once per block."""
    threads, trims = set(), []
    real = ColumnNorms.update
    monkeypatch.setattr(ColumnNorms, "update", lambda self, x: (threads.add(threading.get_ident()), real(self, x)))
    monkeypatch.setattr(engine, "release_freed", lambda: trims.append(1))
    _pruned(llama, sc.Wanda(0.5, batch_size=2), monkeypatch, held=2**40)
    _pruned(llama, sc.Wanda(0.5, batch_size=2), monkeypatch, held=0)
    assert threads == {threading.get_ident()} and len(trims) == 2 * 2


def test_a_measured_profile_gives_freed_memory_back_after_each_block_and_before_pruning(monkeypatch):
    """The profile's dense pass freed a block's activations into the heap each block and held +1 GB on
    SmolLM2 before the search began: it trims as the engine does."""
    trims = []
    monkeypatch.setattr(measure, "release_freed", lambda: trims.append("measure"))
    monkeypatch.setattr(engine, "release_freed", lambda: trims.append("engine"))
    _pruned(llama, sc.Wanda(0.5, batch_size=2, profile=sc.OWL(lam=0.1)), monkeypatch, held=2**40)
    assert trims == ["measure"] * 2 + ["engine"] * 3  # two blocks measured; after the profile; two blocks pruned


@pytest.mark.parametrize(("slack", "trims"), [(2**50, 0), (-1, 4 * 2)])  # 4 stages (q/k/v, o, gate/up, down) x 2
def test_the_one_pass_schedule_gives_freed_memory_back_at_a_stage_once_past_its_slack(slack, trims, monkeypatch):
    calls = []
    monkeypatch.setattr(passes, "release_freed", lambda: calls.append(1))
    monkeypatch.setattr(passes, "SLACK", slack)
    _pruned(llama, sc.Wanda(0.5, batch_size=2), monkeypatch, held=2**40)
    assert len(calls) == trims and passes.resident() > 0


class AutocastBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = nn.Linear(16, 32), nn.Linear(32, 16)

    def forward(self, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):  # open across both layers' stages
            h = self.down(torch.relu(self.up(x)))
        return x + h.float()


class AutocastModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.layers = nn.ModuleList([AutocastBlock() for _ in range(2)])

    def forward(self, input_ids):
        h = self.embed(input_ids)
        for layer in self.layers:
            h = layer(h)
        return h


def test_each_forward_keeps_the_autocast_its_block_opened_while_others_run(monkeypatch):
    """The forwards share one thread's torch settings: one leaving its block's autocast must not turn it
    off for those still inside (they would feed bfloat16 into a float32 layer)."""
    one_pass, _ = _pruned(AutocastModel, sc.Wanda(0.5, batch_size=2), monkeypatch, held=2**40)
    staged, _ = _pruned(AutocastModel, sc.Wanda(0.5, batch_size=2), monkeypatch, held=0)
    assert len(one_pass) == 4 and all(torch.equal(one_pass[n], staged[n]) for n in one_pass)
    assert torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")


@pytest.mark.parametrize("failing", [2, 3, 6])  # q (in the hub, the last forward's arrival), k (inside a forward), o
def test_a_failure_in_one_pass_ends_every_forward_and_restores_the_model(failing, monkeypatch):
    model = llama().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls, real = [], engine.prune_layer

    def flaky(*args):
        calls.append(1)
        if len(calls) == 7 + failing:  # second block
            raise RuntimeError("out of memory")
        return real(*args)

    monkeypatch.setattr(engine, "prune_layer", flaky)
    monkeypatch.setattr(engine, "HELD_BYTES", 2**40)
    with pytest.raises(RuntimeError, match="out of memory") as failure:  # its traceback holds the schedule's frame
        sc.prune(model, sc.Wanda(0.5, batch_size=2), calibration=IDS, progress=False)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert not any(m._forward_pre_hooks for m in model.modules())
    assert not [g for g in gc.get_objects() if isinstance(g, greenlet) and g.parent and not g.dead]  # none waiting
    del failure


def test_several_micro_batches_spill_hidden_states_to_disk(tmp_path):
    model = llama().eval()
    _, blocks = engine.decoder_layers(model)
    stream = engine.open_stream(model, blocks[0], sc.Wanda(batch_size=2), IDS, str(tmp_path))
    assert len(stream.states) == 3 and stream.store.memory == {}
    assert sorted(p.name for p in (tmp_path / "h0").iterdir()) == ["0.safetensors", "1.safetensors", "2.safetensors"]
    assert torch.equal(stream.store.get(1), model.model.embed_tokens(IDS[2:4]))


def test_default_micro_batches_hold_a_bounded_number_of_tokens(monkeypatch, tmp_path):
    monkeypatch.setattr(states, "TOKENS", 32)
    model = llama().eval()
    _, blocks = engine.decoder_layers(model)
    stream = engine.open_stream(model, blocks[0], sc.Wanda(), IDS, str(tmp_path))
    assert [s.count for s in stream.states] == [32, 32, 32]  # 6 sequences of 16 tokens, 2 per micro-batch


@pytest.mark.parametrize("held", [2**40, 0])
def test_a_block_lets_go_of_each_statistic_once_no_layer_needs_it(held, monkeypatch):
    """Without the cycle collector, a block's Hessians (and their factors) are freed when the stage after
    theirs opens and when the block ends: a 7B block's down_proj Hessian and factor are 0.9 GB, and blocks
    whose statistics waited for the collector held many of them at once."""
    alive, most = [], []
    real = Hessian.__init__

    def init(self, n):
        real(self, n)
        if n > 1:  # not the engine's probe of whether the method takes statistics
            alive.append(weakref.ref(self))
            most.append(sum(r() is not None for r in alive))

    monkeypatch.setattr(Hessian, "__init__", init)
    monkeypatch.setattr(engine, "HELD_BYTES", held)
    gc.disable()
    try:
        sc.prune(llama().eval(), sc.SparseGPT(0.5, batch_size=2), calibration=IDS, progress=False)
        assert len(alive) == 2 * 4 and sum(r() is not None for r in alive) == 0  # 4 stages x 2 blocks
        assert max(most) == 1  # only the stage being gathered: the last one's siblings are pruned by then
    finally:
        gc.enable()


@pytest.mark.parametrize("held", [2**40, 0])
def test_autocast_runs_the_forwards_in_bfloat16_and_keeps_statistics_and_updates_in_float32(held, monkeypatch):
    seen = {"outputs": set(), "update": set(), "prune": set()}
    real_update, real_prune = Hessian.update, sc.SparseGPT.prune_weight

    def update(self, x):
        seen["update"].add((x.dtype, torch.is_autocast_enabled("cpu")))
        real_update(self, x)

    def prune_weight(self, weight, statistic, sparsity):
        seen["prune"].add((weight.dtype, torch.is_autocast_enabled("cpu")))
        return real_prune(self, weight, statistic, sparsity)

    monkeypatch.setattr(Hessian, "update", update)
    monkeypatch.setattr(sc.SparseGPT, "prune_weight", prune_weight)
    hook = register_module_forward_hook(lambda m, _, out: seen["outputs"].add(out.dtype)
                                        if isinstance(m, nn.Linear) else None)
    try:
        fast, _ = _pruned(llama, sc.SparseGPT(0.5, batch_size=2, autocast="bfloat16"), monkeypatch, held=held)
    finally:
        hook.remove()
    assert seen == {"outputs": {torch.bfloat16}, "update": {(torch.float32, False)}, "prune": {(torch.float32, False)}}
    monkeypatch.undo()
    exact, _ = _pruned(llama, sc.SparseGPT(0.5, batch_size=2))
    assert all(w.dtype == torch.float32 for w in fast.values())
    agree = sum(int(((fast[n] == 0) == (exact[n] == 0)).sum()) for n in fast) / sum(w.numel() for w in fast.values())
    assert 0.9 < agree < 1  # the same masks but for near-ties: the statistics differ by bfloat16 rounding


def test_autocast_is_an_option_in_every_front_door():
    assert sc.Method.from_dict({"method": "wanda", "autocast": "bfloat16"}, text=True).autocast == "bfloat16"
    with pytest.raises(sc.InvalidParameterError, match="autocast"):
        sc.Wanda(autocast="int8")
