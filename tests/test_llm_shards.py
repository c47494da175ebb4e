"""Block-streamed pruning of a checkpoint saved as safetensors shards equals pruning it in memory."""

import json

import pytest
import torch
from transformers import LlamaForCausalLM

import secateur as sc
import secateur.llm.shards as shards
from secateur.zoo.hf import llama

IDS = torch.randint(0, 100, (6, 16), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dense")
    torch.manual_seed(0)
    llama().save_pretrained(folder, max_shard_size="100KB")  # several shards, blocks spread over them
    return folder


METHODS = [sc.Wanda(0.5), sc.SparseGPT(0.5, batch_size=2), sc.SparseGPT(pattern="2:4"),
           sc.Wanda(0.6, profile=sc.OWL(lam=0.1, m=3), batch_size=2), sc.Magnitude(0.5)]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: f"{m.name}-{m.pattern}-{type(m.profile).__name__}")
def test_streamed_pruning_equals_in_memory_pruning(checkpoint, tmp_path, method):
    files = sorted(p.name for p in checkpoint.iterdir())
    result = sc.prune_checkpoint(checkpoint, tmp_path / "out", method, IDS, progress=False)
    in_memory = LlamaForCausalLM.from_pretrained(checkpoint).eval()
    expected = sc.prune(in_memory, method, calibration=IDS, progress=False)
    streamed = LlamaForCausalLM.from_pretrained(tmp_path / "out").eval()
    reference = in_memory.state_dict()
    assert reference.keys() == streamed.state_dict().keys()
    assert all(torch.equal(v, reference[k]) for k, v in streamed.state_dict().items())
    assert {f"{k}.weight": v for k, v in result.sparsity.items()} == expected.plan.sparsity()
    assert result.profile == expected.profile and len(result.block_seconds) == 2
    assert sorted(p.name for p in checkpoint.iterdir()) == files  # the source is never changed
    report = json.loads((tmp_path / "out" / "prune.json").read_text())
    assert report["method"] == method.to_dict() and report["profile"] == result.profile


def test_output_shards_keep_the_checkpoint_dtype(tmp_path):
    torch.manual_seed(0)
    llama().to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    sc.prune_checkpoint(tmp_path / "bf16", tmp_path / "out", sc.Wanda(0.5), IDS, progress=False)
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 3  # one shard per block, one for the rest
    model = LlamaForCausalLM.from_pretrained(tmp_path / "out")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert float((model.model.layers[1].mlp.down_proj.weight == 0).float().mean()) == 0.5


def test_a_failure_leaves_no_output_and_errors_name_the_fix(checkpoint, tmp_path, monkeypatch):
    real, calls = shards.ShardFiles.save, []

    def flaky(self, index, block):
        calls.append(index)
        if index == 1:
            raise RuntimeError("disk full")
        return real(self, index, block)

    monkeypatch.setattr(shards.ShardFiles, "save", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        sc.prune_checkpoint(checkpoint, tmp_path / "out", sc.Wanda(0.5), IDS, progress=False)
    assert calls == [0, 1] and list(tmp_path.iterdir()) == []  # no partial folder left behind
    (tmp_path / "taken").mkdir()
    with pytest.raises(sc.ModelFileError, match="already exists"):
        sc.prune_checkpoint(checkpoint, tmp_path / "taken", sc.Wanda(0.5), IDS, progress=False)
    with pytest.raises(sc.ModelFileError, match="neither"):
        sc.prune_checkpoint(tmp_path / "taken", tmp_path / "out", sc.Wanda(0.5), IDS, progress=False)
    with pytest.raises(sc.InvalidParameterError, match="one-shot method"):
        sc.prune_checkpoint(checkpoint, tmp_path / "out", sc.Unstructured(0.5), IDS, progress=False)
