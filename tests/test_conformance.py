"""Every zoo architecture: prune 50%, then check what structural pruning promises."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
from torch import nn
from torch.utils import _pytree as pytree

import secateur as sc
from secateur.counting import count_macs, count_params
from secateur.graph import capture
from secateur.inputs import as_inputs
from secateur.replacement import candidates, replace_modules
from secateur.zoo.hf import HF
from secateur.zoo.tricky import TRICKY

ARCHS = {**TRICKY, **HF}
STATISTICS = (nn.LayerNorm, nn.GroupNorm)  # pruning through these changes statistics, not only shapes


def _outputs(model: nn.Module, inputs) -> list[torch.Tensor]:
    out = inputs.call(model)
    out = dict(out) if isinstance(out, Mapping) else out
    return [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]


def _build(name: str):
    make, example = ARCHS[name]
    torch.manual_seed(0)
    model = make().eval()
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.running_mean is not None:
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
    return make, model, as_inputs(example())


def _uses_statistics(model: nn.Module, group) -> bool:
    mods = dict(model.named_modules())
    return any(isinstance(mods.get(m), STATISTICS) or "norm" in type(mods.get(m)).__name__.lower()
               and not isinstance(mods.get(m), nn.modules.batchnorm._NormBase) for m in group.modules)


def _zero_half(model: nn.Module, group) -> None:
    """Zero every tensor slice of the first half of the group's channels (lowest magnitude after)."""
    drop = list(range(group.size // 2))
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with torch.no_grad():
        for m in group.members:
            if m.tensor in tensors:
                tensors[m.tensor].index_fill_(m.dim, torch.tensor(m.indices(drop)), 0.0)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_prune_half_keeps_every_promise(name, tmp_path):
    make, model, inputs = _build(name)
    shapes = [t.shape for t in _outputs(model, inputs)]
    result = sc.prune(model, sc.Structured(sparsity=0.5), example_inputs=inputs)
    assert [t.shape for t in _outputs(model, inputs)] == shapes
    assert result.params_after < result.params_before and result.macs_after < result.macs_before
    assert result.predicted == (count_params(model), count_macs(model, inputs))
    model.train()
    sum(t.float().sum() for t in _outputs(model, inputs)).backward()
    model.eval()
    sc.save(model, tmp_path, plan=result.plan)
    loaded = sc.load(tmp_path, base=make).eval()
    for a, b in zip(_outputs(loaded, inputs), _outputs(model, inputs), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_pruning_zeroed_units_leaves_outputs_equal(name):
    _, model, inputs = _build(name)
    replace_modules(model, candidates(model)[0])  # the modules the planner swaps, swapped first (equal outputs)
    graph = capture(model, inputs.args, inputs.kwargs)
    keep_stats = [g for g in graph.prunable if _uses_statistics(model, g)]
    ignore = tuple({m.tensor.rpartition(".")[0] for g in keep_stats for m in g.members if m.role == "out"})
    for group in graph.prunable:
        if group not in keep_stats:
            _zero_half(model, group)
    expected = _outputs(model, inputs)
    result = sc.prune(model, sc.Structured(sparsity=0.5, ignore=ignore), example_inputs=inputs)
    assert result.params_after < result.params_before
    for a, b in zip(_outputs(model, inputs), expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_zoo_has_at_least_25_architectures():
    assert len(ARCHS) >= 25
