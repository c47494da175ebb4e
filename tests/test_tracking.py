"""Metrics of prune, fine-tune and evaluation stages: to TensorBoard from recipes, to any function from Python."""

import pytest
import torch
from torch import nn

import secateur as sc
from secateur.io import OutputFolder
from secateur.pipeline import run_recipe
from secateur.recipe import parse_recipe
from secateur.tracking import as_tracker, recipe_tracker


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def test_finetune_logs_each_step_and_epoch_to_a_function():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(3)]
    seen = []
    result = sc.finetune(net, data, epochs=2, val_data=data[0], log=lambda metrics, step: seen.append((step, metrics)),
                         progress=False)
    steps = [(s, m["finetune/loss"]) for s, m in seen if "finetune/loss" in m]
    assert [s for s, _ in steps] == [1, 2, 3, 4, 5, 6]
    epochs = [(s, m) for s, m in seen if "finetune/epoch_loss" in m]
    assert [s for s, _ in epochs] == [3, 6]
    assert [m["finetune/val_accuracy"] for _, m in epochs] == result.val_accuracy
    assert epochs[0][1]["finetune/epoch_loss"] == pytest.approx(sum(v for _, v in steps[:3]) / 3)


def test_classifier_recipe_logs_every_stage_to_tensorboard(tmp_path):
    recipe = {"name": "tiny", "model": "zoo:digits-mlp", "data": "digits", "train": {"epochs": 1},
              "log": {"tensorboard": True},
              "steps": [{"prune": {"method": "unstructured", "sparsity": 0.5}}, {"finetune": {"epochs": 1}}],
              "report": {"batch_size": 32, "runs": 2, "plot": False}}
    report = run_recipe(parse_recipe(recipe), tmp_path, progress=False)
    events = _events(tmp_path / "tensorboard")
    accuracy = events.Scalars("stage/accuracy")
    assert [e.step for e in accuracy] == [0, 1, 2]
    assert [e.value for e in accuracy] == pytest.approx([s["metrics"]["accuracy"] for s in report["stages"]])
    assert events.Scalars("prune/nonzero_after")[0].value == report["stages"][1]["metrics"]["nonzero_params"]
    assert len(events.Scalars("finetune/loss")) > 10


def test_trackers_reject_what_cannot_log_and_recipes_follow_the_setting(tmp_path):
    with pytest.raises(sc.InvalidParameterError, match="log= takes a tracker"):
        as_tracker(3)
    off = parse_recipe({"name": "t", "model": "zoo:mlp", "steps": [], "log": {"tensorboard": False}})
    with OutputFolder(tmp_path / "out") as folder:
        assert recipe_tracker(off.log, folder).members == []
        assert isinstance(recipe_tracker(parse_recipe({"name": "t", "model": "zoo:mlp", "steps": []}).log,
                                         folder).members[0], sc.TensorBoard)  # unset: on, as it is installed
