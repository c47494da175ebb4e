"""Recovery of the real SmolLM2-135M after one-shot pruning: distillation from the dense model with masks held.

    flock /tmp/secateur-heavy.lock .venv/bin/python benchmarks/llm_recovery.py --pattern unstructured,2:4 \
        --steps 120 --minutes 20

Wanda (``--method sparsegpt``: SparseGPT; ``--reconstruct``: with block reconstruction) at 50% (or 2:4),
calibration 32 x 512 tokens from the first half of the stdlib-docstring corpus; then ``sc.finetune`` on
windows from that first half with the dense model as teacher (logits KL at temperature T, ``alpha`` of it,
the rest next-token loss). Perplexity on 32 x 512 windows from the second half (in-domain) and from the
Python reference manual (a text neither step sees), dense / pruned / recovered, and whether every mask and
every layer's sparsity is exactly what pruning left.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from common import set_threads, table

import secateur as sc
from secateur.llm import load_corpus, perplexity, windows
from secateur.masks import find_mask, masked_modules
from secateur.zoo.llm import smollm2

LENGTH, COUNT = 512, 32


def texts(tokenizer, train_length: int) -> dict[str, torch.Tensor]:
    ids = tokenizer(load_corpus("stdlib-docstrings"), return_tensors="pt").input_ids[0]
    half = ids.numel() // 2
    other = tokenizer(load_corpus("python-reference"), return_tensors="pt").input_ids[0]
    return {"calibration": windows(ids[:half], LENGTH, COUNT),
            "train": windows(ids[:half], train_length, half // train_length),
            "in-domain": windows(ids[half:], LENGTH, COUNT), "reference": windows(other, LENGTH, COUNT)}


def masks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: find_mask(m).mask.clone() for n, m in masked_modules(model).items()}


def kept_exactly(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    """Every mask unchanged and every masked weight zero exactly where its mask is."""
    after = masks(model)
    return after.keys() == before.keys() and all(
        torch.equal(before[n], after[n]) and torch.equal(model.get_submodule(n).weight != 0, before[n])
        for n in before)


def recover(teacher: torch.nn.Module, pattern: str, data: dict, evaluate, args: argparse.Namespace) -> tuple:
    """Prune a copy of the dense model, measure it, fine-tune it with distillation, measure again."""
    model = copy.deepcopy(teacher)
    spec = {"method": args.method, "sparsity": 0.5, "pattern": pattern}
    if args.reconstruct:
        spec["reconstruct"] = {}
    result = sc.prune(model, sc.Method.from_dict(spec), calibration=data["calibration"], progress=False)
    before = masks(model)
    pruned_ppl = evaluate(model)
    wall, cpu = time.perf_counter(), time.process_time()
    run = sc.finetune(model, data["train"], steps=args.steps, minutes=args.minutes, batch_size=args.batch,
                      accumulate=args.accumulate, teacher=teacher, temperature=args.temperature, alpha=args.alpha,
                      lr=args.lr, max_grad_norm=1.0, seed=0, progress=False,
                      log=lambda m, s: print(s, {k: round(v, 4) for k, v in m.items()}, flush=True))
    wall, cpu = (time.perf_counter() - wall) / 60, (time.process_time() - cpu) / 60
    recovered_ppl = evaluate(model)
    sparsity = sum(result.plan.sparsity().values()) / len(result.plan.masks)
    note = (f"{name(args, pattern)}: recovery {run.steps} steps x {args.batch * args.accumulate} windows of "
            f"{args.length} tokens = {run.tokens:,} tokens in {wall:.1f} wall minutes, {cpu:.1f} CPU minutes "
            f"(process time, {torch.get_num_threads()} threads), {run.tokens / (wall * 60):.0f} tokens/s; "
            f"sparsity {sparsity:.4f}, "
            f"masks and zeros exactly kept: {kept_exactly(model, before)}")
    return pruned_ppl, recovered_ppl, note


def name(args: argparse.Namespace, pattern: str) -> str:
    return f"{args.method}{' + reconstruction' if args.reconstruct else ''} {pattern}"


def main(args: argparse.Namespace) -> str:
    teacher, tokenizer = smollm2()
    data = texts(tokenizer, args.length)

    def evaluate(m: torch.nn.Module) -> dict[str, float]:
        ppl = {k: perplexity(m, data[k], progress=False) for k in ("in-domain", "reference")}
        print(ppl, flush=True)
        return ppl

    dense = evaluate(teacher)
    rows, notes = [("dense", dense)], []
    for pattern in args.pattern.split(","):
        pruned, recovered, note = recover(teacher, pattern, data, evaluate, args)
        rows += [(name(args, pattern), pruned), (f"{name(args, pattern)} + recovery", recovered)]
        notes.append(note)
        print(note, flush=True)
    cells = [{"stage": stage, **{f"ppl {k}": f"{v:.2f} ({v / dense[k]:.2f}x)" for k, v in ppl.items()}}
             for stage, ppl in rows]
    settings = f"lr {args.lr} (cosine over {args.steps} steps), T {args.temperature}, alpha {args.alpha}"
    return table(cells) + "\n\n" + "\n".join(f"- {n}" for n in [*notes, settings]) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="wanda", help="the one-shot method: wanda or sparsegpt")
    parser.add_argument("--reconstruct", action="store_true", help="with block reconstruction (EBFT)")
    parser.add_argument("--pattern", default="unstructured,2:4", help="unstructured (50%%) and/or N:M, e.g. 2:4")
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps (the cosine's length)")
    parser.add_argument("--minutes", type=float, default=20.0, help="training time budget per pattern")
    parser.add_argument("--length", type=int, default=256, help="tokens per training window")
    parser.add_argument("--batch", type=int, default=4, help="windows per micro-batch")
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--alpha", type=float, default=1.0, help="weight of the KL (the rest: next-token loss)")
    set_threads()
    print(main(parser.parse_args()))
