"""Run by tests/test_distributed.py under ``torchrun --nproc_per_node=2`` (gloo on CPU): the same tiny
pruned Llama trained data-parallel by ``sc.finetune`` and by a Hugging Face ``Trainer`` with
secateur's callback and distillation. Each rank writes its final weights and masks for the test."""

import copy
import os
import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

import secateur as sc
from secateur.masks import find_mask, masked_modules
from secateur.zoo.hf import llama

WINDOWS = torch.randint(0, 100, (16, 12), generator=torch.Generator().manual_seed(0))


def pruned():
    torch.manual_seed(0)
    dense = llama().eval()
    student = copy.deepcopy(dense)
    sc.prune(student, sc.Wanda(0.5), calibration=WINDOWS[:4], progress=False)
    return dense, student


def state(model, prefix):
    out = {f"{prefix}.weight.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    out |= {f"{prefix}.mask.{n}": find_mask(m).mask.clone() for n, m in masked_modules(model).items()}
    return out


def with_trainer(out, rank):
    from transformers import TrainingArguments

    from datasets_free import RowsDataset

    dense, student = pruned()
    args = TrainingArguments(output_dir=os.path.join(out, "trainer"), per_device_train_batch_size=2, max_steps=3,
                             learning_rate=1e-2, use_cpu=True, ddp_backend="gloo", report_to=[], save_strategy="no",
                             logging_steps=1, disable_tqdm=True, seed=0, dataloader_drop_last=True)
    logged = []
    trainer = sc.DistillationTrainer(model=student, teacher=dense, args=args, train_dataset=RowsDataset(WINDOWS),
                                     alpha=0.5, callbacks=[sc.PruningCallback(log=lambda m, s: logged.append(m))])
    trainer.train()
    trainer.save_model(os.path.join(out, "trainer-model"))
    if rank == 0 and not all(m.get("sparsity", 0) > 0.3 for m in logged if "loss" in m):
        raise SystemExit(f"the callback logged no sparsity: {logged}")
    return state(student, "trainer")


def main(out):
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    dense, student = pruned()
    result = sc.finetune(student, WINDOWS, steps=4, batch_size=2, teacher=dense, alpha=0.5, lr=1e-2,
                         checkpoint_dir=os.path.join(out, "checkpoint"), checkpoint_every=2, progress=False)
    tensors = state(student, "finetune") | {"tokens": torch.tensor([result.tokens])}
    if "--trainer" in sys.argv:
        tensors |= with_trainer(out, rank)
    save_file(tensors, os.path.join(out, f"rank{rank}.safetensors"))
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # gloo may abort at interpreter exit otherwise (FACTS.md)


if __name__ == "__main__":
    main(sys.argv[1])
