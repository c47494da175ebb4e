"""One-shot pruning of the real SmolLM2-135M: perplexity, pruning time and peak RSS, in one run.

    .venv/bin/python benchmarks/llm.py                        # every method x pattern (about 25 minutes)
    .venv/bin/python benchmarks/llm.py wanda:2:4 sparsegpt:unstructured wanda:unstructured@16

Calibration: 32 windows of 512 tokens from the first half of the stdlib-docstring corpus; evaluation:
32 x 512 from its second half (in-domain) and 32 x 512 from the Python reference manual (a second text).
Peak RSS is the kernel's high-water mark during pruning, reset just before (/proc/self/clear_refs); the
process's RSS just before pruning (model, runtime, token ids) is shown beside it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings

import torch
from common import set_threads, table
from safetensors.torch import load_model, save_model

import secateur as sc
from secateur.llm import load_corpus, perplexity, windows
from secateur.zoo.llm import smollm2

LENGTH, COUNT, MORE = 512, 32, 128
METHODS = {"magnitude": sc.Magnitude, "wanda": sc.Wanda, "sparsegpt": sc.SparseGPT}
PATTERNS = ("unstructured", "4:8", "2:4")


def _rss_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def data(tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = tokenizer(load_corpus("stdlib-docstrings"), return_tensors="pt").input_ids[0]
    half = ids.numel() // 2
    calibration = windows(ids[:half], LENGTH, MORE)  # the first COUNT windows unless a config asks for more
    in_domain = windows(ids[half:], LENGTH, COUNT)
    other = windows(tokenizer(load_corpus("python-reference"), return_tensors="pt").input_ids[0], LENGTH, COUNT)
    return calibration, in_domain, other


def main(configs: list[str]) -> str:
    model, tokenizer = smollm2()
    calibration, in_domain, other = data(tokenizer)
    model_mb = sum(p.numel() * 4 for p in model.parameters()) / 2**20
    rows = [{"method": "dense", "pattern": "-", "ppl in-domain": f"{perplexity(model, in_domain):.2f}",
             "ppl reference text": f"{perplexity(model, other):.2f}", "prune s": "-", "peak RSS MB": "-",
             "achieved sparsity": "0.00"}]
    print(rows[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        dense_path = os.path.join(tmp, "dense.safetensors")
        save_model(model, dense_path)  # tied embeddings are stored once
        for config in configs:
            config, _, count = config.partition("@")  # "wanda:2:4@16": 16 calibration windows
            name, pattern = config.split(":", 1)
            load_model(model, dense_path)
            base = _rss_mb("VmRSS")
            _reset_peak()
            start = time.perf_counter()
            calib = calibration[: int(count) if count else COUNT]
            result = sc.prune(model, METHODS[name](sparsity=0.5, pattern=pattern), calibration=calib)
            seconds, peak = time.perf_counter() - start, _rss_mb("VmHWM")
            achieved = sum(result.plan.sparsity().values()) / len(result.plan.masks)
            label = name + (f" ({count} x {LENGTH} calibration)" if count else "")
            rows.append({"method": label, "pattern": pattern, "ppl in-domain": f"{perplexity(model, in_domain):.2f}",
                         "ppl reference text": f"{perplexity(model, other):.2f}", "prune s": f"{seconds:.1f}",
                         "peak RSS MB": f"{peak:.0f} ({peak / model_mb:.2f}x model)",
                         "RSS before MB": f"{base:.0f}",
                         "achieved sparsity": f"{achieved:.2f}"})
            print(rows[-1], flush=True)
    return f"fp32 model: {model_mb:.0f} MB of parameters.\n\n" + table(rows)


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    set_threads(2)
    chosen = sys.argv[1:] or [f"{m}:{p}" for m in ("sparsegpt", "wanda", "magnitude") for p in PATTERNS] + [
        "wanda:unstructured@16", "sparsegpt:unstructured@128", "sparsegpt:2:4@128"]
    print(main(chosen))
