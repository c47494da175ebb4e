"""Fault injection: a save, a load and a resume stopped between any two filesystem operations (or killed
outright) leave a folder that loads as the old save or the new one, never a mix, and a model as it was."""

import multiprocessing
import os
import random
import signal
import time

import pytest
import torch
from torch import nn

import secateur as sc
from secateur.io import fs, loading
from secateur.masks import find_mask
from secateur.zoo.hf import llama


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch):
    """A killed process, not a power cut, is what these tests model: skip the disk syncs to keep them fast."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


class Killed(BaseException):
    """The process 'died': this and every later filesystem operation fails, as after a real kill."""


def mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))


def pruned(seed: int) -> nn.Module:
    model = mlp(seed)
    sc.prune(model, sc.Structured(sparsity=0.25), example_inputs=torch.randn(2, 8))
    sc.prune(model, sc.Unstructured(0.5))
    return model


def tiny_llama(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = llama().eval()
    sc.prune(model, sc.Magnitude(0.5), progress=False)
    return model


def fingerprint(model: nn.Module) -> list:
    masks = [find_mask(m).mask.clone() for m in model.modules() if find_mask(m) is not None]
    return [v.detach().clone() for v in model.state_dict().values()] + masks


def equal(a: list, b: list) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b, strict=True))


def count_ops(action) -> int:
    ops = []
    fs.FAULTS.hook = lambda op, path: ops.append(op)
    try:
        action()
    finally:
        fs.FAULTS.hook = None
    return len(ops)


def killed_at(k: int, action) -> bool:
    """Run ``action`` and kill it at its ``k``-th filesystem operation; whether it was killed."""
    seen = {"n": 0}

    def hook(op, path):
        seen["n"] += 1
        if seen["n"] >= k:
            raise Killed(op)

    fs.FAULTS.hook = hook
    try:
        action()
        return False
    except Killed:
        return True
    finally:
        fs.FAULTS.hook = None


WRITERS = {
    "secateur": (pruned, mlp, lambda m, d: sc.save(m, d)),
    "lzma-int8": (pruned, mlp, lambda m, d: sc.save(m, d, compress="int8", entropy=True)),
    "huggingface": (tiny_llama, lambda: llama().eval(), lambda m, d: sc.save_pretrained(m, d)),
}


def _base_for(kind):
    make = WRITERS[kind][1]
    return (lambda: make(0)) if kind != "huggingface" else make


@pytest.mark.parametrize(("kind", "exchange"), [("secateur", True), ("secateur", False), ("lzma-int8", True),
                                                ("lzma-int8", False), ("huggingface", True)])
def test_a_save_killed_between_any_two_operations_loads_as_old_or_new(tmp_path, monkeypatch, kind, exchange):
    make, _, write = WRITERS[kind]
    if not exchange:  # a system without renameat2: the folder is set aside, then the new one renamed into place
        monkeypatch.setattr(fs, "exchange", lambda a, b: False)
    old, new, later = make(1), make(2), make(3)
    write(new, tmp_path / "probe")
    prints = {"new": fingerprint(sc.load(tmp_path / "probe", base=_base_for(kind)))}  # int8 storage is lossy
    write(old, tmp_path / "probe")
    prints["old"] = fingerprint(sc.load(tmp_path / "probe", base=_base_for(kind)))
    total = count_ops(lambda: write(new, tmp_path / "probe"))
    outcomes = []
    for k in range(1, total + 1):
        folder = tmp_path / f"k{k}"
        write(old, folder)
        assert killed_at(k, lambda f=folder: write(new, f))
        found = fingerprint(sc.load(folder, base=_base_for(kind)))
        outcomes.append(next(name for name, p in prints.items() if equal(found, p)))
        write(later, folder)  # the next save recovers whatever the kill left
        assert len(fingerprint(sc.load(folder, base=_base_for(kind)))) == len(prints["new"])
    print(f"\n{kind} ({'renameat2' if exchange else 'two renames'}): killed at each of {total} operations -> "
          f"{outcomes.count('old')} old, {outcomes.count('new')} new, 0 mixed")
    assert outcomes[0] == "old" and outcomes[-1] == "new" and outcomes == sorted(outcomes, key=("old", "new").index)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_a_first_save_killed_anywhere_leaves_no_folder_or_a_whole_one(tmp_path):
    model = pruned(1)
    total = count_ops(lambda: sc.save(model, tmp_path / "probe"))
    for k in range(1, total + 1):
        folder = tmp_path / f"k{k}"
        killed_at(k, lambda f=folder: sc.save(model, f))
        try:
            assert equal(fingerprint(sc.load(folder, base=lambda: mlp(0))), fingerprint(model))
        except sc.ModelFileError as err:
            assert "holds no saved model" in str(err)


@pytest.mark.parametrize("where", ["_replay", "_fit", "_check_ties", "load_state_dict", "apply_mask"])
def test_a_load_failing_at_any_step_leaves_the_base_as_it_was(tmp_path, monkeypatch, where):
    sc.save(pruned(1), tmp_path)
    base = mlp(0)
    objects, before = [id(p) for p in base.parameters()], fingerprint(base)
    target = base if where == "load_state_dict" else loading
    real = getattr(target, where)

    def fail(*args, **kwargs):
        real(*args, **kwargs)  # the step runs (tensors copied, masks applied), then the load fails
        raise Killed(where)

    monkeypatch.setattr(target, where, fail)
    with pytest.raises(Killed):
        sc.load(tmp_path, base=base)
    assert objects == [id(p) for p in base.parameters()] and equal(fingerprint(base), before)
    assert not any(find_mask(m) for m in base.modules())


DATA = [(torch.randn(8, 8), torch.randint(0, 2, (8,))) for _ in range(3)]


def test_a_checkpoint_killed_between_any_two_operations_resumes_exactly(tmp_path):
    reference = mlp(5)
    sc.finetune(reference, DATA, epochs=3, progress=False)

    def run(folder):
        model = mlp(5)
        sc.finetune(model, DATA, epochs=3, checkpoint_dir=folder, progress=False)
        return model

    per_epoch = count_ops(lambda: run(tmp_path / "probe")) // 3
    resumed_from = []
    for k in range(1, per_epoch + 1):
        folder = tmp_path / f"k{k}"
        killed_at(per_epoch + k, lambda f=folder: run(f))
        model = mlp(5)
        resumed_from.append(sc.finetune(model, DATA, epochs=3, checkpoint_dir=folder, progress=False).resumed_from)
        assert equal(fingerprint(model), fingerprint(reference))
    print(f"\ncheckpoint: killed at each of {per_epoch} operations of epoch 2's save -> resumed from epoch "
          f"{resumed_from}, every run ending equal to the uninterrupted one")
    assert resumed_from[0] == 1 and set(resumed_from) <= {1, 2}


@pytest.mark.parametrize("step", ["model", "optimizer", "scheduler"])
def test_a_resume_failing_at_any_step_leaves_the_model_as_it_was(tmp_path, monkeypatch, step):
    from torch.optim import AdamW
    from torch.optim.lr_scheduler import CosineAnnealingLR

    sc.finetune(mlp(5), DATA, epochs=1, checkpoint_dir=tmp_path, progress=False)
    model = mlp(6)
    objects, before = [id(p) for p in model.parameters()], fingerprint(model)
    cls = {"model": nn.Module, "optimizer": AdamW, "scheduler": CosineAnnealingLR}[step]
    real = cls.load_state_dict

    def fail(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise RuntimeError(f"{step} failed")

    monkeypatch.setattr(cls, "load_state_dict", fail)
    with pytest.raises(sc.CheckpointError, match=f"{step} failed"):
        sc.finetune(model, DATA, epochs=1, checkpoint_dir=tmp_path, progress=False)
    assert objects == [id(p) for p in model.parameters()] and equal(fingerprint(model), before)


# -- real processes: SIGKILL at random moments, and readers beside a writer ------------------------------------

def _save_forever(folder, models):
    for i in range(10**6):
        sc.save(models[i % 2], folder)


def test_sigkill_at_random_moments_leaves_a_loadable_folder(tmp_path):
    ctx, rng = multiprocessing.get_context("fork"), random.Random(0)
    models = [pruned(1), pruned(2)]
    prints = [fingerprint(m) for m in models]
    outcomes = []
    for trial in range(8):
        folder = tmp_path / f"t{trial}"
        proc = ctx.Process(target=_save_forever, args=(folder, models))
        proc.start()
        time.sleep(rng.uniform(0.0, 0.1))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        try:
            found = fingerprint(sc.load(folder, base=lambda: mlp(0)))
            outcomes.append(next(i for i, p in enumerate(prints) if equal(found, p)))
        except sc.ModelFileError as err:
            assert "holds no saved model" in str(err)
            outcomes.append(None)
        sc.save(pruned(3), folder)
        assert equal(fingerprint(sc.load(folder, base=lambda: mlp(0))), fingerprint(pruned(3)))
    print(f"\nSIGKILL trials: {outcomes} (index of the save loaded; None: killed before the first commit)")
    assert len(outcomes) == 8 and any(o is not None for o in outcomes)


def test_readers_beside_a_writer_see_whole_saves(tmp_path):
    ctx = multiprocessing.get_context("fork")
    models = [pruned(1), pruned(2)]
    prints = [fingerprint(m) for m in models]
    sc.save(models[0], tmp_path / "m")
    proc = ctx.Process(target=_save_forever, args=(tmp_path / "m", models))
    proc.start()
    seen = []
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            found = fingerprint(sc.load(tmp_path / "m", base=lambda: mlp(0)))
            seen.append(next(i for i, p in enumerate(prints) if equal(found, p)))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    print(f"\nreader beside a writer: {len(seen)} loads, {seen.count(0)} of save 0, {seen.count(1)} of save 1")
    assert len(seen) >= 10 and set(seen) == {0, 1}
