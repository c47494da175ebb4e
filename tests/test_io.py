import json

import pytest
import torch
from torch import nn

import secateur as sc
from secateur.masks import find_mask
from tests.conftest import Residual, randomize_bn

X = torch.randn(4, 3, 8, 8)


def test_structured_round_trip_gives_identical_outputs(tmp_path):
    model = randomize_bn(Residual())
    result = sc.prune(model, sc.Structured(sparsity=0.5, scope="global"), example_inputs=X)
    sc.save(model, tmp_path / "m", plan=result.plan)
    loaded = sc.load(tmp_path / "m", base=Residual).eval()
    assert torch.equal(loaded(X), model(X))
    assert loaded.c1.out_channels == model.c1.out_channels and loaded.fc1.in_features == model.fc1.in_features
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["plans"] == [result.plan.to_dict()]


def test_load_into_an_existing_instance(tmp_path):
    model = randomize_bn(Residual())
    sc.prune(model, sc.Structured(sparsity=0.25), example_inputs=X)
    sc.save(model, tmp_path)
    fresh = Residual()
    assert sc.load(tmp_path, base=fresh) is fresh
    assert torch.equal(fresh.eval()(X), model(X))


def test_unstructured_round_trip_restores_masks(tmp_path):
    model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3))
    sc.prune(model, sc.Unstructured(0.6))
    x = torch.randn(5, 10)
    sc.save(model, tmp_path)
    loaded = sc.load(tmp_path, base=lambda: nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 3)))
    assert torch.equal(loaded(x), model(x))
    assert find_mask(loaded[0]) is not None
    zeros = loaded[0].weight == 0
    sc.finetune(loaded, [(x, torch.tensor([0, 1, 2, 0, 1]))], epochs=2, lr=0.1, progress=False)
    assert torch.all(loaded[0].weight[zeros] == 0)


def test_tied_weights_are_stored_once(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.head = nn.Linear(8, 20, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(self.emb(ids))

    model = Tied()
    sc.save(model, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["tied"] == {"head.weight": "emb.weight"}
    loaded = sc.load(tmp_path, base=Tied)
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(loaded(ids), model(ids)) and loaded.head.weight is loaded.emb.weight


def test_missing_folder_raises_named_error(tmp_path):
    with pytest.raises(sc.ModelFileError, match="secateur.save"):
        sc.load(tmp_path / "nowhere", base=Residual)


def test_wrong_architecture_raises_named_error(tmp_path):
    sc.save(nn.Linear(3, 3), tmp_path)
    with pytest.raises(sc.ModelFileError, match="does not fit"):
        sc.load(tmp_path, base=Residual)


def test_files_are_safetensors_and_json_only(tmp_path):
    sc.save(Residual(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "model.safetensors"]
    assert (tmp_path / "model.safetensors").read_bytes()[8:9] == b"{"  # safetensors JSON header, no pickle


def test_a_plan_replays_on_a_fresh_model_from_json():
    from secateur.plan import Plan

    model = randomize_bn(Residual())
    result = sc.prune(model, sc.Structured(sparsity=0.5, scope="global"), example_inputs=X)
    fresh = Residual()
    sc.apply(fresh, Plan.from_dict(json.loads(json.dumps(result.plan.to_dict()))))
    assert [p.shape for p in fresh.parameters()] == [p.shape for p in model.parameters()]
    assert fresh.c1.out_channels == model.c1.out_channels and fresh(X).shape == (4, 5)
