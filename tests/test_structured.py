import pytest
import torch
from torch import nn

import secateur as sc
from secateur.counting import count_macs, count_params
from secateur.graph import capture
from tests.conftest import Residual, randomize_bn, zero_residual_channels

X = torch.randn(4, 3, 8, 8)


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_mlp_counts_fall_exactly_as_computed_by_hand():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    x = torch.randn(3, 8)
    result = sc.prune(model, sc.Structured(sparsity=0.25), example_inputs=x)
    # 16 -> 12 hidden neurons: (8*12 + 12) + (12*2 + 2)
    assert result.params_after == count_params(model) == 8 * 12 + 12 + 12 * 2 + 2
    assert result.macs_after == count_macs(model, (x,)) == 3 * (8 * 12 + 12 * 2)
    assert model[0].out_features == 12 and model[2].in_features == 12


def test_residual_cnn_groups_are_found():
    groups = [set(g.describe().split(" => ")) for g in capture(Residual(), (X,)).prunable]
    assert {"c1.out", "b1", "c2.in", "c2.out", "b2", "fc1.in"} in groups
    assert {"fc1.out", "fc2.in"} in groups
    assert len(groups) == 2


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_structured_keeps_output_shape_and_meets_plan(scope):
    model = randomize_bn(Residual())
    out_shape = model(X).shape
    result = sc.prune(model, sc.Structured(sparsity=0.5, scope=scope), example_inputs=X)
    assert model(X).shape == out_shape
    assert result.predicted == (count_params(model), count_macs(model, (X,)))
    assert result.params_after < result.params_before and result.macs_after < result.macs_before
    model.train()
    model(X).sum().backward()  # backward works on the shrunken model


def test_layer_scope_halves_every_group():
    model = Residual()
    sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=X)
    assert (model.c1.out_channels, model.c2.in_channels, model.c2.out_channels) == (8, 8, 8)
    assert model.fc1.in_features == 8 * 16 and model.fc1.out_features == 16 and model.b1.num_features == 8


def test_zeroed_channels_are_removed_with_outputs_equal():
    model = randomize_bn(Residual())
    drop = [1, 4, 6, 9, 12, 15, 0, 7]
    zero_residual_channels(model, drop)
    expected = model(X)
    sc.prune(model, sc.Structured(sparsity=0.5, ignore=("fc1",)), example_inputs=X)
    assert model.c1.out_channels == 8
    torch.testing.assert_close(model(X), expected, atol=1e-5, rtol=0)


def test_zero_sparsity_changes_nothing():
    model = randomize_bn(Residual())
    before, params = model(X), _params(model)
    result = sc.prune(model, sc.Structured(sparsity=0.0), example_inputs=X)
    assert result.plan.is_empty()
    assert torch.equal(model(X), before)
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())


def test_macs_target_is_met():
    model = Residual()
    result = sc.prune(model, sc.Structured(target=0.5), example_inputs=X)
    assert 0.35 <= result.macs_after / result.macs_before <= 0.5


def test_params_target_is_met():
    model = Residual()
    result = sc.prune(model, sc.Structured(target=sc.Params(0.4)), example_inputs=X)
    assert 0.3 <= result.params_after / result.params_before <= 0.4


def test_round_to_keeps_multiples():
    model = Residual()
    sc.prune(model, sc.Structured(sparsity=0.3, round_to=8), example_inputs=X)
    assert model.c1.out_channels % 8 == 0 and model.fc1.out_features % 8 == 0


def test_unreachable_target_raises_and_leaves_model_alone():
    model = Residual()
    params = _params(model)
    with pytest.raises(sc.PruningError, match="out of reach"):
        sc.prune(model, sc.Structured(target=0.001), example_inputs=X)
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())


def test_failure_mid_surgery_leaves_model_exactly_as_it_was(monkeypatch):
    import secateur.surgery as plan_mod

    model = randomize_bn(Residual())
    before, params = model(X), _params(model)
    objects = {k: id(v) for k, v in model.named_parameters()}
    calls = {"n": 0}
    real = plan_mod.sync_module_attributes

    def flaky(module, per_group=None):
        real(module, per_group)
        if next(module.parameters()).device.type != "meta":  # meta copies are used for planning
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("disk on fire")

    monkeypatch.setattr(plan_mod, "sync_module_attributes", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=X)
    assert calls["n"] == 3
    assert {k: id(v) for k, v in model.named_parameters()} == objects
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    assert model.c1.out_channels == 16 and model.fc1.in_features == 256
    assert torch.equal(model(X), before)


def test_structured_needs_example_inputs():
    with pytest.raises(sc.PruningError, match="example_inputs"):
        sc.prune(Residual(), sc.Structured(sparsity=0.5))


def test_hard_coded_view_blocks_its_group_but_rest_prunes():
    class Hard(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc1, self.fc2 = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8 * 64, 16), nn.Linear(16, 2)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(self.conv(x).view(-1, 512))))

    model = Hard()
    sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=X)
    assert model.conv.out_channels == 8 and model.fc1.out_features == 8
    assert model(X).shape == (4, 2)


def test_untraceable_model_raises_capture_error():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else x

    with pytest.raises(sc.GraphCaptureError, match="could not capture Dynamic"):
        sc.prune(Dynamic(), sc.Structured(sparsity=0.5), example_inputs=torch.ones(1, 4))


def test_digits_cnn_half_macs(trained_cnn, data):
    result = sc.prune(trained_cnn, sc.Structured(target=0.5, round_to=8), example_inputs=data.example)
    assert result.macs_after / result.macs_before <= 0.5
    assert trained_cnn(data.test.x).shape == (len(data.test.x), 10)


def test_blocks_unit_removes_least_influential_blocks_and_reloads(tmp_path):
    from secateur.zoo.hf import llama

    ids = {"input_ids": torch.randint(0, 100, (2, 8))}
    model = llama().eval()
    model.model.layers[1].mlp.down_proj.weight.data.zero_()  # layer 1 now adds only its attention
    model.model.layers[1].self_attn.o_proj.weight.data.zero_()  # ... and nothing at all: influence 0
    result = sc.prune(model, sc.Structured(sparsity=0.5, units=("blocks", "channels")), example_inputs=ids)
    assert result.groups[0] == "model.layers.1" and len(model.model.layers) == 1
    assert model.config.num_hidden_layers == 1 and model.model.layers[0].self_attn.layer_idx == 0
    assert model.model.layers[0].mlp.up_proj.out_features == 64
    sc.save(model, tmp_path)
    loaded = sc.load(tmp_path, base=llama).eval()
    assert torch.equal(loaded(**ids).logits, model(**ids).logits)


def test_blocks_take_a_target_alone_and_need_a_stack():
    with pytest.raises(sc.InvalidParameterError, match="prune twice"):
        sc.Structured(target=0.5, units=("blocks", "channels"))
    with pytest.raises(sc.InvalidParameterError, match="blocks alone"):
        sc.Structured(target=sc.Latency(3.0), units=("blocks",))
    with pytest.raises(sc.PruningError, match="stacks of identical blocks"):
        sc.prune(Residual(), sc.Structured(sparsity=0.5, units=("blocks",)), example_inputs=X)


class _AtLeastTwelve(nn.Module):
    """A layer whose code refuses inputs narrower than 12 features (runs at 15, not at 8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 12:
            raise RuntimeError("too narrow")
        return x


def test_a_plan_the_models_code_cannot_run_is_a_pruning_error_not_an_input_error():
    """UnivNet in the sweep: one unit fewer per group ran, the 50% plan did not, and the error blamed the
    example inputs ("the model does not run on the example inputs")."""
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), _AtLeastTwelve(), nn.Linear(16, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(sc.PruningError, match="cannot run with this plan's sizes .RuntimeError: too narrow"):
        sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=torch.randn(2, 4))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


class _ParamQueries(nn.Module):
    """Passes a view of a parameter into a submodule (DETR-style learned queries): under ``no_grad`` such a
    view is a leaf that requires grad, which torch's FLOP counter's module tracker cannot hook."""

    def __init__(self) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(3, 8))
        self.inp, self.mix, self.head = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x):
        q = self.mix(self.queries.unsqueeze(0).expand(x.shape[0], -1, -1))
        return self.head(torch.relu(q + self.inp(x).mean(1, keepdim=True)))


def test_parameter_views_passed_to_submodules_are_counted_and_pruned():
    model, x = _ParamQueries(), torch.randn(2, 5, 4)
    assert count_macs(model, (x,)) == 2 * (5 * 4 * 8 + 3 * (8 * 8 + 8 * 2))
    assert all(p.requires_grad for p in model.parameters())  # counting leaves the flags as they were
    result = sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=(x,))
    assert result.params_after < result.params_before and model(x).shape == (2, 3, 2)


class _NeedsWidth(nn.Module):
    """Two branches; the code of the first refuses fewer than 24 features (a size limit no graph shows)."""

    def __init__(self) -> None:
        super().__init__()
        self.a1, self.a2 = nn.Linear(8, 32), nn.Linear(32, 4)
        self.b1, self.b2 = nn.Linear(8, 32), nn.Linear(32, 4)

    def forward(self, x):
        h = torch.relu(self.a1(x))
        if h.shape[-1] < 24:
            raise ValueError("needs at least 24 features")
        return self.a2(h) + self.b2(torch.relu(self.b1(x)))


def test_groups_whose_planned_size_the_code_refuses_are_left_out_with_the_reason():
    model, x = _NeedsWidth(), torch.randn(3, 8)
    result = sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=(x,))
    assert (model.a1.out_features, model.b1.out_features) == (32, 16)
    assert model(x).shape == (3, 4)
    assert any("a1" in g and "cannot run at the size this plan gives it" in why for g, why in result.skipped.items())
    assert not any("a1" in g for g in result.groups)


class _NarrowChangesShape(nn.Module):
    """Its code returns fewer outputs when the hidden width drops below 24 (runs at 31, changes shape at 16)."""

    def __init__(self) -> None:
        super().__init__()
        self.a1, self.a2 = nn.Linear(8, 32), nn.Linear(32, 4)

    def forward(self, x):
        h = torch.relu(self.a1(x))
        out = self.a2(h)
        return out[:, :2] if h.shape[-1] < 24 else out


def test_when_the_code_refuses_every_group_the_error_says_so_and_names_them():
    model = _NarrowChangesShape()
    with pytest.raises(sc.PruningError, match="refuses every selected group .* output shapes change .*a1"):
        sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=torch.randn(2, 8))
    assert model.a1.out_features == 32
