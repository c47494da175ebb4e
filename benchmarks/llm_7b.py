"""One-shot pruning of a Llama-2-7B-shaped model larger than this machine's memory, block by block from its files.

    flock /tmp/secateur-heavy.lock .venv/bin/python benchmarks/llm_7b.py /work/llm7b   # make, prune x2, check, delete
    .venv/bin/python benchmarks/llm_7b.py /work/llm7b wanda                            # one method

The model: hidden 4096, FFN 11008, 32 layers, 32 heads with 8 key/value heads (GQA), vocabulary 32000,
random bf16 weights (std 0.02, norms 1) written as one safetensors shard per block (about 13 GB; its
fp32 weights, 27 GB, do not fit in the 24 GiB of RAM). Wanda and SparseGPT at 50% with 8 x 512 random
calibration tokens, each in a fresh process: ``secateur.prune_checkpoint`` reads one block at a time in
fp32, prunes it and writes it in bf16. Reported: whole-model wall and CPU time, seconds per block, and
the process's peak RSS (VmHWM). Then the pruned checkpoint is loaded with ``from_pretrained`` (bf16) and
run on 16 tokens, and the sparsity of its layers is counted. Everything written is deleted at the end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

SHAPE = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
         "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 4096, "tie_word_embeddings": False}
CALIBRATION = (8, 512)


def _config():
    from transformers import LlamaConfig

    return LlamaConfig(**SHAPE, dtype="bfloat16")


def make(folder: Path) -> None:
    """Random bf16 weights, one shard per block, written without ever holding the model."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    config = _config()
    with init_empty_weights():
        shapes = {k: v.shape for k, v in AutoModelForCausalLM.from_config(config).state_dict().items()}
    folder.mkdir(parents=True)
    config.save_pretrained(folder)
    groups: dict[str, list[str]] = {}
    for name in shapes:
        parts = name.split(".")
        key = parts[2] if name.startswith("model.layers.") else "rest"
        groups.setdefault(key, []).append(name)
    weight_map, total, g = {}, 0, torch.Generator().manual_seed(0)
    for i, names in enumerate(groups.values()):
        file = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        tensors = {n: (torch.ones(shapes[n]) if "norm" in n else torch.randn(shapes[n], generator=g) * 0.02)
                   .to(torch.bfloat16) for n in names}
        save_file(tensors, folder / file, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(names, file)
        total += sum(t.numel() * 2 for t in tensors.values())
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                     "weight_map": weight_map}))


def _peak_mb() -> float:
    return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))


def prune(folder: Path, out: Path, method: str) -> dict:
    import secateur as sc

    torch.set_num_threads(2)
    calibration = torch.randint(0, SHAPE["vocab_size"], CALIBRATION, generator=torch.Generator().manual_seed(0))
    chosen = {"wanda": sc.Wanda(0.5), "sparsegpt": sc.SparseGPT(0.5)}[method]
    start, cpu = time.perf_counter(), time.process_time()
    result = sc.prune_checkpoint(folder, out, chosen, calibration, progress=sys.stderr.isatty())
    seconds = result.block_seconds
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"method": method, "wall s": round(wall, 1), "CPU s": round(cpu),
            "s per block": f"{sum(seconds) / len(seconds):.1f} ({min(seconds):.1f}-{max(seconds):.1f})",
            "peak RSS GiB": round(_peak_mb() / 1024, 2),
            "sparsity": f"{min(result.sparsity.values()):.3f}-{max(result.sparsity.values()):.3f}"}


def check(out: Path) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).eval()
    layers = [m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n]
    zeros = [float((m.weight == 0).float().mean()) for m in layers]
    with torch.no_grad():
        logits = model(input_ids=torch.arange(16)[None] + 100, use_cache=False).logits
    return {"linear layers": len(layers), "zero fraction": f"{min(zeros):.3f}-{max(zeros):.3f}",
            "logits finite": bool(torch.isfinite(logits).all()), "logits shape": list(logits.shape),
            "lm_head zeros": float((model.lm_head.weight == 0).float().mean())}


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(root: Path, methods: list[str]) -> None:
    free = shutil.disk_usage(root.parent).free / 2**30
    if free < 45:
        sys.exit(f"{free:.0f} GiB free on {root.parent}; this needs about 40 GiB (source + two pruned copies)")
    source = root / "dense"
    try:
        start = time.perf_counter()
        _child("make", str(source))
        print(f"wrote {source} ({sum(f.stat().st_size for f in source.iterdir()) / 2**30:.1f} GiB) in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
        for method in methods:
            row = _child("prune", str(source), str(root / method), method)
            row |= _child("check", str(root / method))
            print(json.dumps(row), flush=True)
            shutil.rmtree(root / method)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    command = sys.argv[1]
    if command == "make":
        make(Path(sys.argv[2]))
        print("{}")
    elif command == "prune":
        print(json.dumps(prune(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])))
    elif command == "check":
        print(json.dumps(check(Path(sys.argv[2]))))
    else:  # ROOT [METHOD ...]: wanda and sparsegpt unless named
        main(Path(command), sys.argv[2:] or ["wanda", "sparsegpt"])
