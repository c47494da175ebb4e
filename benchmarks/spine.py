"""Issue 8 acceptance, measured side by side in one run.

    .venv/bin/python benchmarks/spine.py [--baseline 408f940] [--repeats 3]

1. Speed: ``sensitivity`` on zoo:residual-cnn and ``allocate`` to 0.5x MACs on zoo:hf-resnet, with this
   tree against secateur 0.1 (the baseline commit, exported to a temporary folder). Each run is a fresh
   subprocess; the two versions alternate so machine noise hits both; medians and their ratio are
   reported, and the results (curves, allocated ratios) must be equal. The first call in a process
   also pays torch's one-time tracing warm-up (about a second, the same for both versions), so
   sensitivity is timed twice: cold, and warm (the cost of the verb itself).
2. Defaults: a digits MLP, 90% global unstructured with the default criterion, then 10 epochs of
   fine-tuning with the dense model as teacher; accuracy against dense, and the plain ``sc.save``
   folder against the dense fp32 state dict. The old default criterion (magnitude) is run beside it.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time, torch
torch.set_num_threads(1)
import secateur as sc
from secateur.resolve import resolve

def timed(fn):
    start = time.perf_counter(); out = fn(); return time.perf_counter() - start, out

r = resolve("zoo:residual-cnn")
run = lambda: sc.sensitivity(r.model, sc.Structured(sparsity=0.0), example_inputs=r.example_inputs, progress=False)
cold_s, sens = timed(run)
warm_s, again = timed(run)
n = resolve("zoo:hf-resnet")
curves = sc.sensitivity(n.model, sc.Structured(sparsity=0.0), example_inputs=n.example_inputs, progress=False)
alloc_s, ratios = timed(lambda: sc.allocate(n.model, curves, sc.Macs(0.5), n.example_inputs))
print(json.dumps({"sensitivity cold_s": cold_s, "sensitivity_s": warm_s, "allocate_s": alloc_s, "ratios": ratios,
                  "curves": [[c.key, [round(q, 6) for q in c.quality], c.macs, c.params] for c in sens.curves]}))
"""


def _export(commit: str, folder: Path) -> Path:
    """The ``src`` tree of ``commit``, unpacked into ``folder``."""
    archive = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"


def _worker(src: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER], env={"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1",
                                                              "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def speed(baseline: str, repeats: int) -> str:
    runs: dict[str, list[dict]] = {"0.1": [], "this tree": []}
    with tempfile.TemporaryDirectory() as tmp:
        old = _export(baseline, Path(tmp))
        for _ in range(repeats):
            runs["0.1"].append(_worker(old))
            runs["this tree"].append(_worker(ROOT / "src"))
    same = {k: all(r[k] == runs["0.1"][0][k] for rs in runs.values() for r in rs) for k in ("curves", "ratios")}
    lines = ["| verb | 0.1 (s, median) | this tree (s, median) | speed-up | same result |", "|---|---|---|---|---|"]
    for verb, key, result in (("sensitivity, zoo:residual-cnn (first call)", "sensitivity cold_s", "curves"),
                              ("sensitivity, zoo:residual-cnn (second call)", "sensitivity_s", "curves"),
                              ("allocate to 0.5x MACs, zoo:hf-resnet", "allocate_s", "ratios")):
        old_s = statistics.median(r[key] for r in runs["0.1"])
        new_s = statistics.median(r[key] for r in runs["this tree"])
        lines.append(f"| {verb} | {old_s:.2f} | {new_s:.2f} | {old_s / new_s:.1f}x | {same[result]} |")
    return "\n".join(lines)


def defaults(epochs: int = 10, dense_epochs: int = 20) -> str:
    import safetensors.torch
    import torch

    import secateur as sc
    from secateur.zoo import DigitsMLP, digits

    torch.set_num_threads(1)
    data = digits()
    torch.manual_seed(0)
    dense = DigitsMLP()
    sc.finetune(dense, data.train.loader(64, shuffle=True), epochs=dense_epochs, lr=2e-3, progress=False)
    base = sc.accuracy(dense, data.test.x, data.test.y)
    dense_bytes = len(safetensors.torch.save(dense.state_dict()))
    lines = [f"Dense: {100 * base:.2f}% test accuracy, fp32 state dict {dense_bytes:,} bytes.", "",
             "| call | criterion | accuracy after 10 epochs (teacher) | loss (points) | folder bytes | vs dense |",
             "|---|---|---|---|---|---|"]
    for label, method in (("Unstructured(0.9, scope='global')", sc.Unstructured(0.9, scope="global")),
                          ("... criterion='magnitude' (0.1's default)",
                           sc.Unstructured(0.9, scope="global", criterion="magnitude"))):
        model = copy.deepcopy(dense)
        sc.prune(model, method)
        torch.manual_seed(1)
        sc.finetune(model, data.train.loader(64, shuffle=True, seed=1), epochs=epochs, teacher=dense, lr=1e-3,
                    progress=False)
        acc = sc.accuracy(model, data.test.x, data.test.y)
        with tempfile.TemporaryDirectory() as tmp:
            sc.save(model, tmp)
            size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        lines.append(f"| `{label}` | {method.criterion} | {100 * acc:.2f}% | {100 * (base - acc):.2f} | {size:,} | "
                     f"1/{dense_bytes / size:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="408f940", help="the 0.1 commit to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    print("## Planner sessions: sensitivity and allocate against 0.1\n")
    print(speed(args.baseline, args.repeats), flush=True)
    print("\n## Defaults: a digits MLP, 90% global unstructured, 10 epochs with a teacher\n")
    print(defaults(), flush=True)
    print(f"\n({time.perf_counter() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
