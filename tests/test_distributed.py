"""Data-parallel fine-tuning: two CPU processes under torchrun (gloo) train a tiny pruned Llama with
``sc.finetune`` and with a Hugging Face ``Trainer`` (secateur's callback and distillation)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import secateur as sc
from secateur.masks import find_mask, masked_modules
from secateur.zoo.hf import llama

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from ddp_worker import WINDOWS, pruned  # noqa: E402


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(Path(sc.__file__).parents[1]), str(HERE), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(HERE / "ddp_worker.py"), str(out), "--trainer"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, [load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1)]


@pytest.mark.parametrize("how", ["finetune", "trainer"])
def test_both_ranks_end_identical_with_the_masks_held(ranks, how):
    _, (zero, one) = ranks
    _, reference = pruned()
    keys = [k for k in zero if k.startswith(f"{how}.")]
    assert keys and all(torch.equal(zero[k], one[k]) for k in keys)
    masks = {n: find_mask(m).mask for n, m in masked_modules(reference).items()}
    assert len(masks) == 14
    for name, mask in masks.items():
        assert torch.equal(zero[f"{how}.mask.{name}"], mask), name
        assert torch.equal(zero[f"{how}.weight.{name}.weight"] != 0, mask), name
    trained = [k for k, v in reference.state_dict().items() if not torch.equal(zero[f"{how}.weight.{k}"], v)]
    assert len(trained) > 10


def test_each_rank_saw_half_the_tokens(ranks):
    _, (zero, one) = ranks
    assert int(zero["tokens"]) == int(one["tokens"]) == 4 * 2 * 12


def test_the_rank_zero_checkpoint_resumes_on_a_fresh_dense_model(ranks):
    out, (zero, _) = ranks
    torch.manual_seed(0)
    fresh = llama()
    result = sc.finetune(fresh, WINDOWS, steps=4, batch_size=2, lr=1e-2, checkpoint_dir=out / "checkpoint",
                         progress=False)  # the settings of the run it resumes
    assert result.resumed_from == 0 and result.steps == 4  # the step budget ended the run inside epoch 0
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, zero[f"finetune.weight.{key}"]), key


def test_the_trainer_checkpoint_reloads_with_plain_transformers(ranks):
    out, (zero, _) = ranks
    from transformers import LlamaForCausalLM

    reloaded = LlamaForCausalLM.from_pretrained(out / "trainer-model")
    for key, value in reloaded.state_dict().items():
        assert torch.equal(value, zero[f"trainer.weight.{key}"]), key
