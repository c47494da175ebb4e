import pytest
import torch
from torch import nn

import secateur as sc
from secateur.criteria import CRITERIA as REGISTRY
from secateur.unstructured import prunable_layers
from tests.conftest import Residual, randomize_bn, zero_residual_channels

X = torch.randn(8, 3, 8, 8)
CRITERIA = sorted(REGISTRY)
NEEDS_DATA = {n for n, c in REGISTRY.items() if c.needs}
UNITS_ONLY = {n for n, c in REGISTRY.items() if c.units_only}
BLOCKS_ONLY = {n for n, c in REGISTRY.items() if c.blocks_only}
WIDTH = sorted(set(CRITERIA) - BLOCKS_ONLY)
CALIBRATION = [(torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,))) for _ in range(3)]


def _calibration(criterion):
    return CALIBRATION if criterion in NEEDS_DATA else None


@pytest.mark.parametrize("criterion", WIDTH)
def test_every_criterion_prunes_structurally(criterion):
    model = randomize_bn(Residual())
    result = sc.prune(model, sc.Structured(sparsity=0.5, criterion=criterion), example_inputs=X[:1],
                      calibration=_calibration(criterion))
    assert result.params_after < result.params_before and model(X).shape == (8, 5)


@pytest.mark.parametrize("criterion", sorted(set(WIDTH) - {"fpgm", "random"}))
def test_zeroed_channels_score_lowest(criterion):
    """A channel whose every weight (and BatchNorm scale) is zero contributes nothing: removed first."""
    model = randomize_bn(Residual())
    drop = [0, 3, 5, 6, 9, 10, 12, 15]
    zero_residual_channels(model, drop)
    expected = model(X)
    sc.prune(model, sc.Structured(sparsity=0.5, criterion=criterion, ignore=("fc1",)), example_inputs=X[:1],
             calibration=_calibration(criterion))
    torch.testing.assert_close(model(X), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("criterion", sorted(set(CRITERIA) - UNITS_ONLY))
def test_every_weight_criterion_unstructured(criterion):
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 32), nn.ReLU(), nn.Linear(32, 5))
    sc.prune(model, sc.Unstructured(0.6, criterion=criterion, scope="global"), calibration=_calibration(criterion))
    weights = [m.weight for m in prunable_layers(model).values()]
    assert sum(int((w == 0).sum()) for w in weights) == int(0.6 * sum(w.numel() for w in weights))


def test_fpgm_removes_the_redundant_filter():
    conv = nn.Conv2d(3, 4, 1)
    with torch.no_grad():  # filters 0 and 1 sit on the median; 2 and 3 are far apart
        conv.weight.copy_(torch.tensor([[0.0, 0, 0], [0.1, 0, 0], [5, 5, 5], [-5, -5, -5]]).view(4, 3, 1, 1))
    model = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(4, 2, 1))
    sc.prune(model, sc.Structured(sparsity=0.25, criterion="fpgm"), example_inputs=torch.randn(1, 3, 4, 4))
    assert model[0].weight.shape[0] == 3 and float(model[0].weight.detach().abs().max()) == 5.0


def test_units_only_criteria_are_refused_for_weights():
    with pytest.raises(sc.UnknownCriterionError, match="whole channels"):
        sc.Unstructured(0.5, criterion="fpgm")
    with pytest.raises(sc.UnknownCriterionError, match="whole channels"):
        sc.SemiStructured(2, 4, criterion="bn_scale")


def test_data_criteria_need_calibration():
    with pytest.raises(sc.PruningError, match="calibration="):
        sc.prune(Residual(), sc.Structured(sparsity=0.5, criterion="taylor"), example_inputs=X[:1])


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 4)])
def test_nm_masks_have_exactly_n_nonzeros_in_every_group(n, m):
    model = nn.Sequential(nn.Conv2d(8, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 36, 20), nn.ReLU(),
                          nn.Linear(20, 6))
    result = sc.prune(model, sc.SemiStructured(n, m))
    conv = model[0].weight.detach().movedim(1, -1).reshape(-1, m)
    linear = model[3].weight.detach().reshape(-1, m)
    for groups in (conv, linear):
        assert torch.all((groups != 0).sum(1) == n)
    assert result.skipped == ({"5": "input size 20 is not a multiple of 8"} if m == 8 else {})
    x = torch.randn(4, 8, 8, 8)
    sc.finetune(model, [(x, torch.randint(0, 6, (4,)))], epochs=2, lr=0.05, progress=False)
    assert torch.all((model[3].weight.detach().reshape(-1, m) != 0).sum(1) <= n)


def test_nm_rejects_bad_pattern():
    with pytest.raises(sc.InvalidSparsityError, match="0 < n < m"):
        sc.SemiStructured(4, 4)
