"""Issue 9: resuming fine-tuning validates the checkpoint before touching the model (each failed on 0.1)."""

import json

import pytest
import torch
from safetensors.torch import load as tensors_from_bytes
from safetensors.torch import save as tensors_to_bytes
from torch import nn

import secateur as sc

FILE = "checkpoint.safetensors"
torch.manual_seed(0)
X, Y = torch.randn(32, 6), torch.randint(0, 3, (32,))
DATA = [(X[i : i + 8], Y[i : i + 8]) for i in range(0, 32, 8)]


def net(classes: int = 3) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, classes))


def values(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def rewrite(folder, change_meta=None, change_tensors=None) -> None:
    """Edit a checkpoint consistently (digest recomputed), as a careless tool or a hostile user would."""
    from secateur.checkpoint import digest

    raw = (folder / FILE).read_bytes()
    size = int.from_bytes(raw[:8], "little")
    meta = json.loads(json.loads(raw[8 : 8 + size])["__metadata__"]["secateur"])
    tensors = tensors_from_bytes(raw)
    if change_tensors:
        change_tensors(tensors)
    if change_meta:
        change_meta(meta)
    meta["sha256"] = digest(tensors)
    (folder / FILE).write_bytes(tensors_to_bytes(tensors, metadata={"secateur": json.dumps(meta)}))


@pytest.fixture
def checkpoint(tmp_path):
    sc.finetune(net(), DATA, epochs=1, checkpoint_dir=tmp_path, progress=False)
    return tmp_path


def _resume_fails(folder, model=None, match="", **kwargs):
    model = model or net()
    objects, before = [id(p) for p in model.parameters()], values(model)
    with pytest.raises(sc.CheckpointError, match=match):
        sc.finetune(model, DATA, epochs=kwargs.pop("epochs", 2), checkpoint_dir=folder, progress=False, **kwargs)
    assert objects == [id(p) for p in model.parameters()]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_checkpoint_of_another_model_is_refused_before_the_model_changes(checkpoint):
    _resume_fails(checkpoint, net(classes=4), match="do not fit")


def test_an_unknown_tensor_is_refused(checkpoint):
    rewrite(checkpoint, change_tensors=lambda t: t.update({"model.extra": torch.zeros(2)}))
    _resume_fails(checkpoint, match="do not fit")


@pytest.mark.parametrize(("where", "value", "match"), [
    ("lr", "fast", "lr='fast' is not a learning rate"),
    ("lr", 1e9, r"lr=1000000000.0 is not a learning rate this run.s schedule reaches \(0 to 0.001\)"),
    ("weight_decay", 0.5, "weight_decay=0.5"),
    ("epoch", 1e9, "epoch=1000000000.0 is not an integer"),
    ("epoch", 10**9, "past the 2 epochs"),
    ("step", -3, "step=-3 is not an integer >= 0"),
])
def test_counters_and_hyper_parameters_are_validated(checkpoint, where, value, match):
    def change(meta):
        if where in ("lr", "weight_decay"):
            meta["optimizer"]["param_groups"][0][where] = value
        else:
            meta["loop"][where] = value
    rewrite(checkpoint, change_meta=change)
    _resume_fails(checkpoint, match=match)


def test_resuming_with_other_settings_is_refused(checkpoint):
    _resume_fails(checkpoint, match="weight_decay=0.0", weight_decay=0.1)
    _resume_fails(checkpoint, match="T_max", epochs=3)


def test_a_damaged_checkpoint_is_a_named_error(checkpoint):
    raw = bytearray((checkpoint / FILE).read_bytes())
    raw[-5] ^= 0xFF
    (checkpoint / FILE).write_bytes(bytes(raw))
    _resume_fails(checkpoint, match="SHA-256")
    (checkpoint / FILE).write_bytes(b"garbage")
    _resume_fails(checkpoint, match="damaged")


def test_ctrl_c_while_checkpointing_keeps_weights_and_counters_of_one_epoch(tmp_path, monkeypatch):
    """Interrupted while writing epoch 2's checkpoint, the run resumes from epoch 1 and ends exactly as an
    uninterrupted run (0.1 paired epoch-2 weights with epoch-1 counters)."""
    from secateur.io import fs

    reference = net()
    sc.finetune(reference, DATA, epochs=3, progress=False)
    model = net()
    state = {"epoch": 0}

    def on_epoch(epoch, _):
        state["epoch"] = epoch + 1

    def kill(op, path):
        if state["epoch"] == 1 and op == "rename":  # writing the second epoch's checkpoint
            raise KeyboardInterrupt
    monkeypatch.setattr(fs.FAULTS, "hook", kill)
    with pytest.raises(KeyboardInterrupt):
        sc.finetune(model, DATA, epochs=3, checkpoint_dir=tmp_path, on_epoch_end=on_epoch, progress=False)
    monkeypatch.setattr(fs.FAULTS, "hook", None)
    resumed = net()
    result = sc.finetune(resumed, DATA, epochs=3, checkpoint_dir=tmp_path, progress=False)
    assert result.resumed_from == 1
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), reference.state_dict().values(),
                                                 strict=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE]
