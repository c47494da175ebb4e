"""Structured compression of the real SmolLM2-135M: width and depth, one-shot, with measured speed.

    .venv/bin/python benchmarks/llm_structured.py                      # the whole table (about 1 hour)
    .venv/bin/python benchmarks/llm_structured.py width:flap:0.8 depth:angular:0.2 --speed --export

A config is ``width:CRITERION:FRACTION[:SCOPE[:UNITS]]`` (``Structured(target=Params(FRACTION,
embeddings=False), units=UNITS, scope=SCOPE)``; global and ``heads+channels`` by default; ``hidden`` adds the
hidden size, whose embedding table and tied output layer shrink outside the budget) or ``depth:CRITERION:SPARSITY``
(``Structured(sparsity=SPARSITY, units=("blocks",))``). Calibration: CAL x 512 tokens from the first half
of the stdlib-docstring corpus; evaluation: EVAL x 512 from its second half and EVAL x 512 from the Python
reference manual (a text calibration never sees). One planner session per width criterion scores the units
once; each target's plan is applied to a fresh copy of the dense model.

Recovery: :func:`recover` distils the dense model into the pruned one for ``--recovery-steps`` steps
(``sc.finetune(..., steps=, teacher=)`` on token windows; 0 skips it). Speed (``--speed``): prefill of
512 tokens and decode of 128 tokens at batch 1 with the KV cache, dense and pruned measured in turn
(``secateur.lm_speed``); ``--breakdown`` splits the decode time by operator (matrix products, the cache's
growth, attention, the rest). ``--export`` saves the uniform-width model, reopens it with ``from_pretrained``
and exports it to ONNX.
"""

from __future__ import annotations

import argparse
import copy
import math
import tempfile
import time
import warnings

import torch
from common import set_threads, table

import secateur as sc
from secateur.compensation import add_shifts
from secateur.llm import load_corpus, perplexity, windows
from secateur.lm_speed import decode, generation_speed, prefill
from secateur.zoo.llm import smollm2

LENGTH = 512
WIDTH = ("magnitude", "activation", "taylor", "minitron", "flap")
DEPTH = ("block_influence", "angular")
FRACTIONS, DEPTHS = (0.9, 0.8, 0.7), (0.1, 0.2, 0.3)
RECOVERY_STEPS, RECOVERY_BATCH = 200, 4


def data(tokenizer, count: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Every window of the first half of the docstrings (calibration, recovery), and evaluation windows."""
    ids = tokenizer(load_corpus("stdlib-docstrings"), return_tensors="pt").input_ids[0]
    half = ids.numel() // 2
    other = tokenizer(load_corpus("python-reference"), return_tensors="pt").input_ids[0]
    return windows(ids[:half], LENGTH, half // LENGTH), {"in-domain": windows(ids[half:], LENGTH, count),
                                                         "reference": windows(other, LENGTH, count)}


def recover(model: torch.nn.Module, teacher: torch.nn.Module, train: torch.Tensor, steps: int) -> float | None:
    """Distil ``teacher`` into ``model`` on ``train`` windows for ``steps`` steps and return the CPU minutes it
    took; None when ``steps`` is 0 (the table then reads "not run")."""
    if not steps:
        return None
    start = time.process_time()
    sc.finetune(model, train, steps=steps, batch_size=RECOVERY_BATCH, teacher=teacher, lr=1e-4, progress=False)
    return (time.process_time() - start) / 60


def method_of(config: str) -> tuple[str, sc.Structured]:
    kind, criterion, amount, *rest = config.split(":")
    if kind == "depth":
        return kind, sc.Structured(sparsity=float(amount), units=("blocks",), criterion=criterion)
    scope, units = (rest + ["global", "heads+channels"][len(rest):])[:2]
    return kind, sc.Structured(target=sc.Params(float(amount), embeddings=False), units=tuple(units.split("+")),
                               criterion=criterion, scope=scope)


def non_embedding(model: torch.nn.Module) -> int:
    tables = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return sum(p.numel() for p in model.parameters()) - sum(tables.values())


class Pruner:
    """Pruned copies of ``dense``: depth through ``sc.prune``; width from one planner session per criterion
    and scope (scores computed once), each target's plan applied to a fresh copy."""

    def __init__(self, dense: torch.nn.Module, calibration: torch.Tensor) -> None:
        self.dense, self.example, self.rows = dense, calibration[:1], [c[None] for c in calibration]
        self.sessions: dict[tuple, sc.Planner] = {}

    def __call__(self, config: str) -> torch.nn.Module:
        kind, method = method_of(config)
        model = copy.deepcopy(self.dense)
        if kind == "depth":
            sc.prune(model, method, example_inputs=self.example, calibration=self.rows, progress=False)
            return model.eval()
        key = (method.criterion, method.scope, method.units)
        if key not in self.sessions:
            self.sessions = {key: sc.Planner(self.dense, method, self.example, self.rows)}  # one held at a time
        planner = self.sessions[key]
        plan, shifts, _ = planner.complete(planner.plan(target=method.target))
        sc.apply(model, plan)
        add_shifts(model, plan, shifts)
        return model.eval()


def export_check(model: torch.nn.Module, ids: torch.Tensor, folder: str) -> str:
    """Save with save_pretrained, reopen with plain from_pretrained, export the reopened model to ONNX."""
    from transformers import AutoModelForCausalLM

    from secateur.onnx_export import OnnxModel, export_onnx

    model.save_pretrained(folder)
    again = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        expected, reopened = model(ids).logits, again(ids).logits

    onnx = OnnxModel(export_onnx(again, f"{folder}/model.onnx", {"input_ids": ids}))
    gap = float((onnx(input_ids=ids) - expected).abs().max())
    return (f"from_pretrained max |logit diff| {float((reopened - expected).abs().max()):.2e}; "
            f"ONNX ({onnx.file_bytes / 2**20:.0f} MB) vs torch {gap:.2e}")


def decode_breakdown(model: torch.nn.Module, prompt: torch.Tensor, steps: int = 64) -> dict[str, float]:
    """Milliseconds per decoded token by operator family (torch.profiler, self CPU time) after a ``prompt``
    prefill: the matrix products (``mm``), the key-value cache's growth (``cat``), attention and the rest.
    Python's own time between operators is not in it: the decode wall time minus this total."""
    from torch.profiler import ProfilerActivity, profile

    families = {"aten::mm": "mm", "aten::addmm": "mm", "aten::cat": "cat",  # addmm: layers with a bias (FLAP's)
                "aten::_scaled_dot_product_flash_attention_for_cpu": "attention"}
    with torch.no_grad():
        out = prefill(model, prompt)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            decode(model, out, steps)
    ms = dict.fromkeys([*families.values(), "other"], 0.0)
    for event in prof.key_averages():
        ms[families.get(event.key, "other")] += event.self_cpu_time_total / 1e3 / steps
    return ms


def ratio(ppl: dict[str, float], base: dict[str, float]) -> float:
    """Geometric mean over the texts of pruned / dense perplexity."""
    return math.exp(sum(math.log(ppl[k] / base[k]) for k in base) / len(base))


def load(spec: str) -> tuple[torch.nn.Module, object]:
    """``llm:smollm2`` (the real model) or ``hf:FOLDER`` (a local causal LM, e.g. a tiny one to try the script)."""
    if spec == "llm:smollm2":
        return smollm2()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = spec.removeprefix("hf:")
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def main(configs: list[str], cal: int, count: int, speed: bool, export: bool, spec: str = "llm:smollm2",
         steps: int = RECOVERY_STEPS, breakdown: bool = False, repeats: int = 3) -> str:
    dense, tokenizer = load(spec)
    train, evals = data(tokenizer, count)
    calibration = train[:cal]
    base = {k: perplexity(dense, v, progress=False) for k, v in evals.items()}
    dense_params, prune, notes = non_embedding(dense), Pruner(dense, calibration), []
    rows = [{"config": "dense", "non-emb params": "1.000", **{f"ppl {k}": f"{v:.2f}" for k, v in base.items()},
             "ppl ratio": "1.00", "recovered ratio": "-", "prune s": "-", "prefill x": "1", "decode x": "1"}]
    for config in configs:
        start = time.perf_counter()
        model = prune(config)
        seconds = time.perf_counter() - start
        ppl = {k: perplexity(model, v, progress=False) for k, v in evals.items()}
        row = {"config": config, "non-emb params": f"{non_embedding(model) / dense_params:.3f}",
               **{f"ppl {k}": f"{v:.2f}" for k, v in ppl.items()}, "ppl ratio": f"{ratio(ppl, base):.2f}",
               "recovered ratio": "not run", "prune s": f"{seconds:.0f}", "prefill x": "-", "decode x": "-"}
        if speed:  # dense and pruned measured in turn, in this run
            fast = generation_speed({"dense": dense, "pruned": model}, calibration[:1], new_tokens=128, repeats=repeats)
            row["prefill x"] = f"{fast['pruned'].prefill / fast['dense'].prefill:.2f}"
            row["decode x"] = f"{fast['pruned'].decode / fast['dense'].decode:.2f}"
            notes.append(f"{config}: dense {fast['dense'].prefill:.0f} / {fast['dense'].decode:.1f} tok/s, pruned "
                         f"{fast['pruned'].prefill:.0f} / {fast['pruned'].decode:.1f} tok/s (prefill / decode)")
        if breakdown:
            for name, m in (("dense", dense), ("pruned", model)):
                ms = decode_breakdown(m, calibration[:1])
                notes.append(f"{config}: {name} decode ms/token: " + ", ".join(f"{k} {v:.1f}" for k, v in ms.items())
                             + f", total {sum(ms.values()):.1f}")
        minutes = recover(model, dense, train, steps)
        if minutes is not None:
            after = {k: perplexity(model, v, progress=False) for k, v in evals.items()}
            row["recovered ratio"] = f"{ratio(after, base):.2f} ({minutes:.0f} CPU min)"
        if export and ":layer" in config:
            with tempfile.TemporaryDirectory() as folder:
                notes.append(f"{config}: {export_check(model, calibration[:1, :64], folder)}")
        rows.append(row)
        print(row, flush=True)
        del model
    budget = f"{steps} steps x {RECOVERY_BATCH} x {LENGTH} tokens of distillation from the dense model"
    return "\n".join([table(rows), "", f"ppl ratio: geometric mean over the two texts of pruned / dense perplexity; "
                      f"calibration {cal} x {LENGTH}, evaluation {count} x {LENGTH} per text; recovery: {budget}.",
                      *notes])


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    set_threads(2)
    parser = argparse.ArgumentParser()
    parser.add_argument("configs", nargs="*")
    parser.add_argument("--cal", type=int, default=32)
    parser.add_argument("--eval", type=int, default=16)
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--export", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="speed: timed runs per model (median)")
    parser.add_argument("--breakdown", action="store_true", help="decode ms/token by operator, dense and pruned")
    parser.add_argument("--model", default="llm:smollm2")
    parser.add_argument("--recovery-steps", type=int, default=RECOVERY_STEPS, help="0: one-shot only")
    args = parser.parse_args()
    chosen = args.configs or ([f"width:{c}:{f}" for c in WIDTH for f in FRACTIONS]
                              + ["width:flap:0.8:layer", "width:minitron:0.8:layer"]
                              + [f"depth:{c}:{s}" for c in DEPTH for s in DEPTHS])
    print(main(chosen, args.cal, args.eval, args.speed, args.export, args.model, args.recovery_steps,
               args.breakdown, args.repeats))
