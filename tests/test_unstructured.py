import pytest
import torch
from torch import nn

import secateur as sc
from secateur.masks import find_mask
from secateur.unstructured import prunable_layers


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))


@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_layer_scope_zeroes_exact_fraction_of_every_layer(sparsity):
    model = _mlp()
    sc.prune(model, sc.Unstructured(sparsity))
    for layer in prunable_layers(model).values():
        w = layer.weight
        assert int((w == 0).sum()) == int(sparsity * w.numel())


def test_global_scope_zeroes_exact_fraction_overall_and_smallest_first():
    model = _mlp()
    dense = [layer.weight.detach().abs().flatten() for layer in prunable_layers(model).values()]
    threshold = torch.cat(dense).sort().values[int(0.7 * sum(d.numel() for d in dense))]
    result = sc.prune(model, sc.Unstructured(0.7, scope="global"))
    weights = [layer.weight.detach().flatten() for layer in prunable_layers(model).values()]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros == int(0.7 * sum(w.numel() for w in weights))
    assert all(float(w.abs().max()) >= float(threshold) or float(w.abs().max()) == 0 for w in weights)
    assert result.nonzero_after < result.nonzero_before


def test_ignore_leaves_layers_dense():
    model = _mlp()
    sc.prune(model, sc.Unstructured(0.9, ignore=("4",)))
    assert find_mask(model[4]) is None and int((model[4].weight == 0).sum()) == 0
    assert find_mask(model[0]) is not None


def test_zero_sparsity_changes_nothing():
    model = _mlp()
    x = torch.randn(8, 20)
    before = model(x)
    sc.prune(model, sc.Unstructured(0.0))
    assert torch.equal(model(x), before)


def test_masks_stay_zero_through_finetuning_with_momentum_and_weight_decay():
    model = _mlp()
    sc.prune(model, sc.Unstructured(0.75, scope="global"))
    zero_before = {n: (m.weight == 0).clone() for n, m in prunable_layers(model).items()}
    data = [(torch.randn(16, 20), torch.randint(0, 4, (16,))) for _ in range(4)]
    sc.finetune(model, data, epochs=3, lr=1e-2, weight_decay=0.1, progress=False)
    # and a plain SGD-with-momentum loop the user writes themselves
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    for x, y in data:
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for name, layer in prunable_layers(model).items():
        assert torch.all(layer.weight[zero_before[name]] == 0)
        assert int((layer.weight != 0).sum()) > 0


def test_pruning_again_intersects_masks():
    model = _mlp()
    sc.prune(model, sc.Unstructured(0.5))
    first = (model[0].weight == 0).clone()
    sc.prune(model, sc.Unstructured(0.8))
    assert torch.all(model[0].weight[first] == 0)
    assert int((model[0].weight == 0).sum()) == int(0.8 * model[0].weight.numel())
