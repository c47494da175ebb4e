"""Pruning inside the groups of grouped convolutions and GroupNorm: channel ``j`` of every group is one unit,
so groups stay equal and their count stays; ``units=("groups",)`` still removes whole groups."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import secateur as sc
from secateur.graph import capture
from secateur.zoo.tricky import GroupedConv

torch.set_num_threads(1)
X = torch.randn(2, 3, 8, 8)


def _grouped_conv() -> nn.Module:
    torch.manual_seed(0)
    return GroupedConv().eval()


def _shapes(model: nn.Module) -> dict[str, tuple]:
    return {n: tuple(p.shape) for n, p in model.named_parameters()}


def _runs_forward_and_backward(model: nn.Module, x: torch.Tensor, shape: tuple) -> None:
    model.zero_grad()
    out = model(x)
    out.sum().backward()
    assert out.shape == shape
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_channel_j_of_every_group_goes_so_groups_stay_equal_and_as_many():
    model = _grouped_conv()
    dense = model(X).shape
    sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=X)
    g, norm = model.grouped, model.norm
    assert (g.in_channels, g.out_channels, g.groups) == (16, 32, 4)
    assert (norm.num_groups, norm.num_channels) == (8, 32)
    assert _shapes(model) == {"conv1.weight": (16, 3, 3, 3), "conv1.bias": (16,), "grouped.weight": (32, 4, 3, 3),
                              "grouped.bias": (32,), "norm.weight": (32,), "norm.bias": (32,),
                              "conv2.weight": (8, 32, 1, 1), "conv2.bias": (8,), "head.weight": (5, 8),
                              "head.bias": (5,)}
    _runs_forward_and_backward(model, X, dense)


def test_whole_groups_are_still_there_with_units_groups():
    model = _grouped_conv()
    result = sc.prune(model, sc.Structured(sparsity=0.5, units=("groups",)), example_inputs=X)
    g, norm = model.grouped, model.norm
    assert (g.in_channels, g.out_channels, g.groups, tuple(g.weight.shape)) == (16, 32, 2, (32, 8, 3, 3))
    assert (norm.num_groups, norm.num_channels, model.conv2.in_channels) == (4, 32, 32)
    assert [u.kind for u in result.units.values()] == ["groups"]
    _runs_forward_and_backward(model, X, (2, 5))


class ConvStack(nn.Module):
    """conv -> grouped conv -> conv: no statistics in between, so zeroed channels change nothing."""

    def __init__(self, conv: type = nn.Conv2d) -> None:
        super().__init__()
        self.conv1, self.grouped = conv(3, 16, 3, padding=1), conv(16, 32, 3, padding=1, groups=4)
        self.conv2, self.head = conv(32, 8, 1), nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.grouped(F.relu(self.conv1(x))))
        return self.head(F.relu(self.conv2(x)).flatten(2).mean(2))


def _zero_inside(model: ConvStack) -> None:
    """Zero channels 1 and 2 of every group on both sides of the grouped conv, and conv2's first half, in
    every tensor they touch."""
    with torch.no_grad():
        ins, outs = [g * 4 + j for g in range(4) for j in (1, 2)], [g * 8 + j for g in range(4) for j in (1, 2, 5, 6)]
        model.conv1.weight[ins] = 0
        model.conv1.bias[ins] = 0
        model.grouped.weight[:, [1, 2]] = 0
        model.grouped.weight[outs] = 0
        model.grouped.bias[outs] = 0
        model.conv2.weight[:, outs] = 0
        model.conv2.weight[:4] = 0
        model.conv2.bias[:4] = 0
        model.head.weight[:, :4] = 0


def test_zeroed_channels_inside_every_group_are_the_ones_removed_and_outputs_stay_equal():
    torch.manual_seed(0)
    model = ConvStack().eval()
    _zero_inside(model)
    before = model(X)
    result = sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=X)
    assert (model.grouped.in_channels, model.grouped.out_channels, model.grouped.groups) == (8, 16, 4)
    assert sorted(u.size for u in result.units.values()) == [4, 8, 8]
    assert torch.allclose(model(X), before, atol=1e-6)


def test_a_grouped_conv1d_is_pruned_inside_its_groups():
    torch.manual_seed(0)
    model = ConvStack(nn.Conv1d).eval()
    x = torch.randn(2, 3, 12)
    _zero_inside(model)
    before = model(x)
    sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=x)
    assert tuple(model.grouped.weight.shape) == (16, 2, 3) and model.grouped.groups == 4
    assert torch.allclose(model(x), before, atol=1e-6)
    _runs_forward_and_backward(model, x, (2, 5))


def test_unit_scores_sum_over_every_group_they_sit_in():
    model, dense = _grouped_conv(), _grouped_conv().requires_grad_(False)
    result = sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=X)
    conv1 = next(u for k, u in result.units.items() if k.startswith("conv1"))
    rows = [[g * 8 + j for g in range(4)] for j in range(8)]
    want = [float((dense.conv1.weight[r].pow(2).sum() + dense.conv1.bias[r].pow(2).sum()
                   + dense.grouped.weight[:, j].pow(2).sum()).sqrt()) for j, r in enumerate(rows)]
    assert conv1.size == 8 and conv1.scores == [round(w, 6) for w in want]


def test_saved_pruned_model_reloads_with_equal_outputs(tmp_path):
    for units in (None, ("groups",)):
        model = _grouped_conv()
        sc.prune(model, sc.Structured(sparsity=0.5, units=units), example_inputs=X)
        folder = sc.save(model, tmp_path / str(units))
        loaded = sc.load(folder, base=GroupedConv).eval()
        assert loaded.grouped.groups == model.grouped.groups and loaded.norm.num_groups == model.norm.num_groups
        assert torch.equal(loaded(X), model(X))


def test_round_to_keeps_channels_per_group_at_its_multiples():
    model = _grouped_conv()
    sc.prune(model, sc.Structured(sparsity=0.5, round_to=3), example_inputs=X)
    g = model.grouped
    assert (g.in_channels, g.out_channels, g.groups, model.norm.num_groups) == (24, 48, 4, 8)
    _runs_forward_and_backward(model, X, (2, 5))


class UnevenNorm(nn.Module):
    """A grouped conv of 3 groups of 16 channels, then GroupNorm of 4 groups of 12: neither divides the other."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.grouped = nn.Conv2d(3, 48, 1), nn.Conv2d(48, 48, 3, padding=1, groups=3)
        self.norm, self.conv2, self.head = nn.GroupNorm(4, 48), nn.Conv2d(48, 8, 1), nn.Linear(8, 5)

    def forward(self, x):
        x = self.norm(self.grouped(F.relu(self.conv1(x))))
        return self.head(F.relu(self.conv2(F.relu(x))).mean((2, 3)))


def test_groupnorm_groups_that_do_not_divide_the_conv_groups_keep_channels_equal_modulo_four():
    torch.manual_seed(0)
    model = UnevenNorm().eval()
    bias = model.grouped.bias.tolist()
    sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=X)
    assert (model.grouped.out_channels, model.grouped.groups, model.norm.num_groups) == (24, 3, 4)
    kept = [bias.index(b) for b in model.grouped.bias.tolist()]
    residues = sorted({k % 4 for k in kept})
    assert len(residues) == 2 and kept == sorted(k for k in range(48) if k % 4 in residues)
    _runs_forward_and_backward(model, X, (2, 5))


def test_groupnorm_groups_that_do_not_divide_the_conv_groups_block_whole_groups_with_a_reason():
    torch.manual_seed(0)
    model = UnevenNorm().eval()
    graph = capture(model, (X,), grouping="groups")
    (group,) = [g for g in graph.groups if "grouped.bias" in {m.tensor for m in g.members}]
    assert group.blocked == ["group_norm has 4 groups that do not line up with those of the layers coupled to it"]
    with pytest.raises(sc.PruningError, match="no prunable groups for units=\\('groups',\\)"):
        sc.prune(model, sc.Structured(sparsity=0.5, units=("groups",)), example_inputs=X)


def test_a_grouped_transposed_conv_is_refused_with_a_reason():
    model = nn.Sequential(nn.Conv2d(3, 16, 1), nn.ReLU(), nn.ConvTranspose2d(16, 16, 2, stride=2, groups=4),
                          nn.ReLU(), nn.Conv2d(16, 4, 1)).eval()
    reasons = {g.key: g.skipped for g in sc.analyze(model, example_inputs=X).groups}
    assert "is a grouped transposed conv" in reasons["0"]


def test_depthwise_convs_tie_input_to_output_channels_whatever_the_units():
    from secateur.zoo import ZOO

    entry = ZOO["depthwise-separable"]
    for units, kind in ((None, "channels"), (("channels",), "channels"), (("groups",), "groups")):
        torch.manual_seed(0)
        model = entry.make().eval()
        result = sc.prune(model, sc.Structured(sparsity=0.5, units=units), example_inputs=entry.example())
        dw = model.dw[0]
        assert (dw.in_channels, dw.out_channels, dw.groups) == (12, 12, 12)
        assert result.units[next(k for k in result.units if k.startswith("dw.0"))].kind == kind


def test_iterative_rounds_keep_pruning_inside_groups_and_replay_on_load(tmp_path):
    from secateur.schedule import iterative_prune

    model = _grouped_conv()
    iterative_prune(model, sc.Structured(sparsity=0.5), rounds=3, recover=lambda m: None, example_inputs=X,
                    progress=False)
    g, norm = model.grouped, model.norm
    assert (g.in_channels, g.out_channels, g.groups, norm.num_groups, norm.num_channels) == (20, 40, 4, 8, 40)
    _runs_forward_and_backward(model, X, (2, 5))
    loaded = sc.load(sc.save(model, tmp_path / "it"), base=GroupedConv).eval()
    assert torch.equal(loaded(X), model(X))


def test_a_folder_without_plans_resizes_grouped_layers_keeping_their_group_count(tmp_path):
    model = _grouped_conv()  # shrunk by hand, as another tool prunes: 4 conv groups and 8 norm groups of half width
    model.conv1, model.grouped = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1, groups=4)
    model.norm, model.conv2 = nn.GroupNorm(8, 32), nn.Conv2d(32, 16, 1)
    loaded = sc.load(sc.save(model, tmp_path / "by-hand"), base=GroupedConv).eval()
    assert (loaded.grouped.groups, loaded.grouped.in_channels, loaded.norm.num_groups) == (4, 16, 8)
    assert torch.equal(loaded(X), model(X))


def test_on_the_model_input_a_grouped_conv_prunes_its_outputs_and_a_depthwise_one_says_why_not():
    x = torch.randn(1, 8, 8, 8)
    grouped = nn.Sequential(nn.Conv2d(8, 16, 3, groups=2), nn.ReLU(), nn.Conv2d(16, 4, 1)).eval()
    sc.prune(grouped, sc.Structured(sparsity=0.5), example_inputs=x)
    assert (grouped[0].in_channels, grouped[0].out_channels, grouped[0].groups) == (8, 8, 2)
    depthwise = nn.Sequential(nn.Conv2d(8, 16, 3, groups=8), nn.ReLU(), nn.Conv2d(16, 4, 1)).eval()
    reasons = {g.key: g.skipped for g in sc.analyze(depthwise, example_inputs=x).groups}
    assert reasons["0"] == "conv2d ties its output channels to input channels that are not tracked"
