"""Language-model fine-tuning with masks held: next-token loss, distillation from the dense model,
gradient accumulation, checkpoints and exact resume, on tiny Llama configs."""

import copy

import pytest
import torch
import torch.nn.functional as F

import secateur as sc
from ddp_worker import WINDOWS
from ddp_worker import pruned as _pruned
from secateur.inputs import Inputs
from secateur.loss import next_token_loss
from secateur.masks import find_mask, masked_modules
from secateur.training import logits_kl
from secateur.zoo.hf import llama

HELD_OUT = torch.randint(0, 100, (8, 12), generator=torch.Generator().manual_seed(1))


def _planted(count: int, seed: int) -> torch.Tensor:
    """Windows where each token determines the next: (7 * t + 3) mod 100, from random starts."""
    ids = torch.randint(0, 100, (count, 1), generator=torch.Generator().manual_seed(seed))
    for _ in range(11):
        ids = torch.cat([ids, (7 * ids[:, -1:] + 3) % 100], 1)
    return ids


@pytest.fixture(scope="module")
def taught():
    """A tiny Llama trained on the planted task (a teacher with something to teach)."""
    torch.manual_seed(0)
    model = llama()
    sc.finetune(model, _planted(64, 2), steps=150, batch_size=16, lr=1e-2, progress=False)
    return model.eval()


def _masks(model):
    return {n: find_mask(m).mask.clone() for n, m in masked_modules(model).items()}


def _kl(student, teacher, ids=HELD_OUT):
    with torch.no_grad():
        return float(logits_kl(student(input_ids=ids).logits, teacher(input_ids=ids).logits))


def test_next_token_loss_equals_the_models_own_loss_with_labels():
    torch.manual_seed(0)
    model = llama().eval()
    ids = WINDOWS[:3]
    with torch.no_grad():
        own = model(input_ids=ids, labels=ids).loss
        ours = next_token_loss(model(input_ids=ids).logits, Inputs((), {"input_ids": ids}))
    assert float(ours) == pytest.approx(float(own), abs=1e-6)


def test_masks_and_sparsity_are_exactly_kept_through_distillation():
    dense, student = _pruned()
    before = _masks(student)
    result = sc.finetune(student, WINDOWS, steps=6, batch_size=4, teacher=dense, temperature=2.0, alpha=0.5,
                         lr=1e-2, progress=False)
    after = _masks(student)
    assert result.steps == 6 and result.tokens == 6 * 4 * 12
    assert before.keys() == after.keys() and len(before) == 14  # 7 Linear layers in each of 2 blocks
    for name, mask in before.items():
        weight = student.get_submodule(name).weight
        assert torch.equal(mask, after[name]) and torch.equal(weight != 0, mask)
        assert (weight == 0).float().mean().item() == pytest.approx(0.5, abs=1e-9)


def test_distillation_lowers_the_kl_to_the_dense_model(taught):
    student = copy.deepcopy(taught)
    sc.prune(student, sc.Wanda(0.7), calibration=_planted(8, 3), progress=False)
    before = _kl(student, taught, _planted(8, 4))
    sc.finetune(student, _planted(64, 5), steps=40, batch_size=8, teacher=taught, temperature=1.0, alpha=1.0,
                lr=1e-3, progress=False)
    assert _kl(student, taught, _planted(8, 4)) < 0.5 * before


def test_hidden_states_of_a_narrower_student_are_matched_through_a_learned_projection(taught):
    student = copy.deepcopy(taught)
    sc.prune(student, sc.Structured(sparsity=0.25, units=("hidden",)), example_inputs={"input_ids": WINDOWS[:1]})
    assert student.config.hidden_size == 48
    before = _kl(student, taught, _planted(8, 4))
    sc.finetune(student, _planted(64, 5), steps=60, batch_size=8, teacher=taught, temperature=1.0, alpha=1.0,
                hidden_weight=0.5, lr=1e-3, progress=False)
    assert student.config.hidden_size == 48 and student(input_ids=HELD_OUT).logits.shape == (8, 12, 100)
    assert _kl(student, taught, _planted(8, 4)) < 0.5 * before


def test_gradient_accumulation_of_k_micro_batches_equals_one_big_batch():
    results = []
    for batch_size, accumulate in ((8, 1), (2, 4), (3, 3)):  # 3 x 3 covers 8 rows as 3 + 3 + 2
        _, student = _pruned()
        sc.finetune(student, WINDOWS[:8], steps=1, batch_size=batch_size, accumulate=accumulate,
                    optimizer=lambda params: torch.optim.SGD(params, lr=1.0), progress=False)
        results.append(student.state_dict())
    for other in results[1:]:
        for key, value in results[0].items():
            assert torch.allclose(other[key], value, atol=1e-6, rtol=0), key


def test_resume_after_a_crash_is_bit_identical_and_restores_the_masks(tmp_path):
    def run(model, folder, log=None):
        return sc.finetune(model, WINDOWS, steps=6, batch_size=2, accumulate=2, teacher=teacher, alpha=0.5,
                           lr=1e-2, checkpoint_dir=folder, checkpoint_every=3, log=log, progress=False)

    teacher, straight = _pruned()
    run(straight, tmp_path / "straight")

    def crash(metrics, step):
        if step == 4:
            raise KeyboardInterrupt

    _, interrupted = _pruned()
    with pytest.raises(KeyboardInterrupt):
        run(interrupted, tmp_path / "resumed", crash)
    torch.manual_seed(0)
    fresh = llama()  # dense: the masks come back from the checkpoint
    result = run(fresh, tmp_path / "resumed")
    assert result.resumed_from == 0 and result.steps == 6  # 4 steps per epoch: resumed from step 3, mid-epoch
    assert _masks(fresh).keys() == _masks(straight).keys()
    for key, value in straight.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_finetune_takes_tokenizer_dicts_from_a_dataloader_and_drops_text_columns():
    rows = [{"input_ids": w, "attention_mask": torch.ones_like(w), "text": "a sentence"} for w in WINDOWS[:8]]
    loader = torch.utils.data.DataLoader(rows, batch_size=4)
    assert isinstance(next(iter(loader))["text"], list)
    _, student = _pruned()
    result = sc.finetune(student, loader, epochs=1, progress=False)
    assert result.steps == 2 and result.tokens == 8 * 12 and result.losses[0] > 0


def test_a_forward_loss_drives_finetune_and_the_taylor_criterion():
    calls = []

    def forward(model, batch):
        calls.append(type(batch).__name__)
        return F.cross_entropy(model(batch["x"]), batch["y"])

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    data = [{"x": torch.randn(6, 4), "y": torch.randint(0, 3, (6,))} for _ in range(3)]
    result = sc.finetune(net, data, epochs=2, loss_fn=sc.ForwardLoss(forward), progress=False)
    assert calls == ["dict"] * 6 and len(result.losses) == 2
    pruned = sc.prune(net, sc.Structured(sparsity=0.5, criterion="taylor"), example_inputs=torch.randn(1, 4),
                      calibration=data, loss_fn=sc.ForwardLoss(forward))
    assert pruned.params_after == 4 * 4 + 4 + 4 * 3 + 3 and len(calls) == 9


def test_the_planted_teacher_learned_its_task(taught):
    ids = _planted(8, 4)
    with torch.no_grad():
        predicted = taught(input_ids=ids).logits[:, :-1].argmax(-1)
    assert (predicted == ids[:, 1:]).float().mean() > 0.9


def test_trainer_callback_runs_a_gradual_schedule_and_logs_sparsity(tmp_path):
    from transformers import TrainingArguments

    from datasets_free import RowsDataset

    torch.manual_seed(0)
    model = llama()
    schedule = sc.GradualPruning(sc.Unstructured(0.5), start=0, end=4, every=2)
    logged = []
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=5, learning_rate=1e-3,
                             use_cpu=True, report_to=[], save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = sc.DistillationTrainer(model=model, teacher=copy.deepcopy(model), args=args, alpha=0.0,
                                     train_dataset=RowsDataset(WINDOWS),
                                     callbacks=[sc.PruningCallback(schedule, log=lambda m, s: logged.append((s, m)))])
    trainer.train()
    assert [s for s, _ in schedule.history] == [0, 2, 4]
    sparsity = {s: m["sparsity"] for s, m in logged if "loss" in m}
    values = [sparsity[s] for s in sorted(sparsity)]
    assert values[0] == pytest.approx(0.0) and values[-1] == pytest.approx(0.5, abs=1e-3)
    assert values == sorted(values) and len(set(values)) == 3  # 0, then the cubic step at 2, then 0.5 from 4


def test_a_time_budget_stops_after_the_step_that_spends_it():
    _, student = _pruned()
    result = sc.finetune(student, WINDOWS, steps=100, minutes=1e-9, batch_size=4, progress=False)
    assert result.steps == 1 and result.tokens == 4 * 12
    with pytest.raises(sc.InvalidParameterError, match="minutes=0"):
        sc.finetune(student, WINDOWS, minutes=0, progress=False)


def test_a_step_budget_ending_inside_an_epoch_leaves_it_open_for_a_resume(tmp_path):
    _, student = _pruned()
    first = sc.finetune(student, WINDOWS, steps=3, batch_size=4, checkpoint_dir=tmp_path, progress=False)
    assert first.steps == 3 and len(first.losses) == 1  # 4 steps per epoch: epoch 0 is not complete
    state = {k: v.clone() for k, v in student.state_dict().items()}
    again = sc.finetune(student, WINDOWS, steps=3, batch_size=4, checkpoint_dir=tmp_path, progress=False)
    assert again.resumed_from == 0 and again.steps == 3
    assert all(torch.equal(v, state[k]) for k, v in student.state_dict().items())
