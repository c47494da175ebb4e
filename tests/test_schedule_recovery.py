import pytest
import torch
from torch import nn

import secateur as sc
from secateur.schedule import GradualPruning, cubic_sparsity, iterative_prune, iterative_sparsities
from secateur.unstructured import prunable_layers


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))


def _data(n: int = 6) -> list:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 16, generator=g), torch.randint(0, 4, (16,), generator=g)) for _ in range(n)]


def _sparsity(model: nn.Module) -> float:
    weights = [m.weight for m in prunable_layers(model).values()]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def test_gradual_schedule_hits_each_promised_sparsity_and_the_final_one_at_end():
    model, data = _mlp(), _data()
    pruning = GradualPruning(sc.Unstructured(0.8, scope="global"), start=2, end=14, every=4)
    seen = {}
    sc.finetune(model, data, epochs=3, pruning=pruning, progress=False,
                on_epoch_end=lambda epoch, m: seen.setdefault(epoch, _sparsity(m)))
    assert [s for s, _ in pruning.history] == [2, 6, 10, 14]
    for step, sparsity in pruning.history:
        assert sparsity == pytest.approx(cubic_sparsity(step, 0.8, 2, 14))
    assert seen[0] == pytest.approx(cubic_sparsity(6, 0.8, 2, 14), abs=1e-3)  # 6 steps per epoch
    assert _sparsity(model) == pytest.approx(0.8, abs=1e-3)


def test_gradual_masks_only_grow():
    model, data = _mlp(), _data()
    zeros_at = []
    pruning = GradualPruning(sc.Unstructured(0.9), start=1, end=12, every=3)
    sc.finetune(model, data, epochs=2, pruning=pruning, progress=False,
                on_epoch_end=lambda e, m: zeros_at.append((m[0].weight == 0).clone()))
    assert torch.all(zeros_at[1][zeros_at[0]])


def test_rewinding_resets_survivors_to_their_start_values():
    model, data = _mlp(), _data()
    start_weights = model[0].weight.detach().clone()
    pruning = GradualPruning(sc.Unstructured(0.5), start=0, end=5, every=5, rewind=True)
    sc.finetune(model, data, epochs=1, pruning=pruning, progress=False)
    w = model[0].weight.detach()
    # one epoch is 6 steps: the 6th step trains once more after the rewind at step 5
    assert torch.all(w[w == 0] == 0) and _sparsity(model) == pytest.approx(0.5, abs=1e-3)
    pruning2 = GradualPruning(sc.Unstructured(0.5), start=0, end=6, every=6, rewind=True)
    model2 = _mlp()
    sc.finetune(model2, data, epochs=1, pruning=pruning2, progress=False)
    kept = model2[0].weight.detach() != 0
    assert torch.equal(model2[0].weight.detach()[kept], start_weights[kept])


def test_iterative_rounds_reach_the_target():
    assert iterative_sparsities(0.9, 3)[-1] == pytest.approx(0.9)
    model, data = _mlp(), _data()
    rounds = []
    results = iterative_prune(model, sc.Unstructured(0.9), 3,
                              lambda m: rounds.append(sc.finetune(m, data, epochs=1, progress=False)))
    assert len(results) == len(rounds) == 3 and _sparsity(model) == pytest.approx(0.9, abs=1e-3)
    cnn = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 36, 4))
    results = iterative_prune(cnn, sc.Structured(sparsity=0.75), 2, lambda m: None,
                              example_inputs=torch.randn(1, 3, 8, 8))
    assert cnn[0].out_channels == 4 and [r.params_after for r in results][-1] < results[0].params_after


def test_early_stopping_keeps_the_best_epoch():
    model, data = _mlp(), _data()
    val = (torch.randn(64, 16), torch.randint(0, 4, (64,)))
    result = sc.finetune(model, data, epochs=30, lr=0.05, val_data=val, patience=2, progress=False)
    assert result.stopped_early and len(result.val_accuracy) < 30
    assert sc.accuracy(model, *val) == max(result.val_accuracy)
    assert result.val_accuracy[result.best_epoch] == max(result.val_accuracy)


def test_resume_after_interruption_continues_exactly(tmp_path):
    data = _data()
    reference = _mlp()
    sc.prune(reference, sc.Unstructured(0.5))
    interrupted = _mlp()
    sc.prune(interrupted, sc.Unstructured(0.5))
    sc.finetune(reference, data, epochs=4, weight_decay=0.01, progress=False)

    def crash(epoch, _):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sc.finetune(interrupted, data, epochs=4, weight_decay=0.01, checkpoint_dir=tmp_path, on_epoch_end=crash,
                    progress=False)
    resumed = _mlp()
    sc.prune(resumed, sc.Unstructured(0.5))
    result = sc.finetune(resumed, data, epochs=4, weight_decay=0.01, checkpoint_dir=tmp_path, progress=False)
    assert result.resumed_from == 2 and len(result.losses) == 4
    for a, b in zip(resumed.state_dict().values(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]
