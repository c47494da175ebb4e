"""How much can be removed with accuracy kept: secateur's methods against peers, measured in one run.

    .venv/bin/python benchmarks/accuracy.py                 # all sections (about 15 minutes)
    .venv/bin/python benchmarks/accuracy.py curves          # curves | criteria | compression | latency

Every pruned model gets the same fine-tuning budget (EPOCHS epochs of AdamW). Peers: torch.nn.utils.prune
(global L1 unstructured) and Torch-Pruning (structured, L2 magnitude, its ratio bisected to the same MACs).
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import warnings

import torch
import torch.nn.utils.prune as torch_prune
from common import set_threads, table, torch_pruning
from torch import nn

import secateur as sc
from secateur.counting import count_macs
from secateur.inputs import as_inputs
from secateur.schedule import GradualPruning, steps_for
from secateur.zoo import build_model, load_dataset

EPOCHS = 6
UNSTRUCTURED = (0.5, 0.7, 0.8, 0.9, 0.95)
MACS = (0.75, 0.5, 0.25)
SETUPS = {"digits-cnn": ("digits", 8), "mnist1d-cnn": ("mnist1d", 15)}
TRAIN_EPOCHS = {**{k: v[1] for k, v in SETUPS.items()}, "digits-mlp": 20}
_DENSE: dict[str, tuple] = {}


def dense(name: str):
    """The trained dense model and its data (trained once per run)."""
    if name not in _DENSE:
        data_name, epochs = SETUPS.get(name, ("digits", 0))[0], TRAIN_EPOCHS[name]
        data = load_dataset(data_name)
        torch.manual_seed(0)
        model = build_model(name)
        sc.finetune(model, data.train.loader(64, shuffle=True), epochs=epochs, lr=3e-3 if "cnn" in name else 2e-3,
                    progress=False)
        _DENSE[name] = (model.eval(), data)
    return _DENSE[name]


def acc(model, data) -> float:
    return 100 * sc.accuracy(model, data.test.x, data.test.y)


def _tune(model, data, teacher=None, pruning=None, epochs=EPOCHS, lr=1e-3) -> None:
    torch.manual_seed(1)
    sc.finetune(model, data.train.loader(64, shuffle=True, seed=1), epochs=epochs, teacher=teacher, lr=lr,
                pruning=pruning, progress=False)


def _calibration(data) -> list:
    return [(data.train.x[i : i + 64], data.train.y[i : i + 64]) for i in range(0, 512, 64)]


def one_shot_unstructured(name: str, sparsity: float, criterion: str = "lamp") -> float:
    teacher, data = dense(name)
    ours = copy.deepcopy(teacher)
    sc.prune(ours, sc.Unstructured(sparsity, scope="global", criterion=criterion), calibration=_calibration(data))
    _tune(ours, data)
    return acc(ours, data)


def unstructured_point(name: str, sparsity: float) -> dict[str, float]:
    teacher, data = dense(name)
    peer = copy.deepcopy(teacher)
    layers = [(m, "weight") for m in peer.modules() if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)]
    torch_prune.global_unstructured(layers, pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    _tune(peer, data)
    out = {"torch.nn.utils.prune": acc(peer, data), "secateur one-shot (LAMP)": one_shot_unstructured(name, sparsity)}
    gradual = copy.deepcopy(teacher)
    steps = steps_for(EPOCHS, len(data.train.loader(64)))
    method = sc.Unstructured(sparsity, scope="global", criterion="lamp")
    _tune(gradual, data, teacher=teacher, pruning=GradualPruning(method, start=0, end=int(0.5 * steps), every=5))
    out["secateur gradual+KD (LAMP)"] = acc(gradual, data)
    return out


def _tp_to_macs(model, example, fraction: float) -> nn.Module:
    """Torch-Pruning with its uniform ratio bisected until the MACs kept match ``fraction``."""
    dense_macs = count_macs(model, (example,))
    lo, hi, best = 0.0, 0.95, None
    for _ in range(10):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        torch_pruning(trial, as_inputs((example,)), mid)
        if count_macs(trial, (example,)) / dense_macs <= fraction:
            hi, best = mid, trial
        else:
            lo = mid
    return best


def one_shot_structured(name: str, fraction: float, criterion: str = "l2", teacher_kd: bool = False) -> float:
    teacher, data = dense(name)
    ours = copy.deepcopy(teacher)
    sc.prune(ours, sc.Structured(target=fraction, criterion=criterion, round_to=4), example_inputs=data.example,
             calibration=_calibration(data))
    _tune(ours, data, teacher=teacher if teacher_kd else None)
    return acc(ours, data)


def structured_point(name: str, fraction: float) -> dict[str, float]:
    teacher, data = dense(name)
    method = sc.Structured(target=fraction, criterion="l2", round_to=4)
    peer = _tp_to_macs(teacher, data.example, fraction)
    _tune(peer, data)
    out = {"Torch-Pruning": acc(peer, data), "secateur one-shot": one_shot_structured(name, fraction),
           "secateur one-shot+KD": one_shot_structured(name, fraction, teacher_kd=True)}
    rounds = copy.deepcopy(teacher)
    sc.iterative_prune(rounds, method, 3, lambda m: _tune(m, data, teacher, epochs=EPOCHS // 3),
                       example_inputs=data.example)
    out["secateur iterative+KD"] = acc(rounds, data)
    return out


def curves() -> str:
    parts = []
    for name in SETUPS:
        teacher, data = dense(name)
        base = acc(teacher, data)
        rows = []
        for kind, levels, point in (("unstructured", UNSTRUCTURED, unstructured_point),
                                    ("MACs kept", MACS, structured_point)):
            for level in levels:
                result = point(name, level)
                peer = next(iter(result.values()))
                best = max(v for k, v in result.items() if k.startswith("secateur"))
                rows.append({"pruning": f"{kind} {level:.0%}" if kind == "unstructured" else f"{level:.2f}x MACs",
                             **{k: f"{v:.2f}" for k, v in result.items()},
                             "secateur best - peer": f"{best - peer:+.2f}", "best - dense": f"{best - base:+.2f}"})
                print(name, rows[-1], flush=True)
        keys = list(dict.fromkeys(k for r in rows for k in r))
        parts.append(f"### {name} (dense test accuracy {base:.2f}%)\n\n" +
                     table([{k: r.get(k, "") for k in keys} for r in rows]))
    return "\n\n".join(parts)


def criteria() -> str:
    rows = []
    for name in SETUPS:
        for criterion in sorted(sc.criteria.CRITERIA):
            weights = not sc.criteria.CRITERIA[criterion].units_only
            row = {"model": name, "criterion": criterion,
                   "unstructured 90% one-shot+FT": f"{one_shot_unstructured(name, 0.9, criterion):.2f}" if weights
                   else "(scores units only)",
                   "0.5x MACs one-shot+FT": f"{one_shot_structured(name, 0.5, criterion):.2f}"}
            rows.append(row)
            print(rows[-1], flush=True)
    return table(rows)


def compression() -> str:
    """Deep-Compression size: an MLP pruned >= 90% (gradual, LAMP, distilled, 40 epochs) + int8 + compressed
    storage, against the dense fp32 file."""
    teacher, data = dense("digits-mlp")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sc.save(teacher, f"{tmp}/dense")
        dense_bytes = os.path.getsize(f"{tmp}/dense/model.safetensors")
        for sparsity in (0.9, 0.95, 0.97):
            model = copy.deepcopy(teacher)
            steps = steps_for(40, len(data.train.loader(64)))
            method = sc.Unstructured(sparsity, scope="global", criterion="lamp")
            _tune(model, data, teacher=teacher, epochs=40, lr=2e-3,
                  pruning=GradualPruning(method, 0, int(0.5 * steps), every=5))
            row = {"sparsity": f"{sparsity:.0%}", "accuracy": f"{acc(model, data):.2f}",
                   "dense accuracy": f"{acc(teacher, data):.2f}"}
            for label, kw in (("fp32 file", {}), ("bitmask", {"compress": "bitmask"}), ("+int8", {"compress": "int8"}),
                              ("+int8+LZMA", {"compress": "int8", "entropy": True})):
                sc.save(model, f"{tmp}/{label}", **kw)
                size = sum(os.path.getsize(f"{tmp}/{label}/{f}") for f in os.listdir(f"{tmp}/{label}")
                           if f.startswith("model.safetensors"))
                row[label] = f"{size:,} ({dense_bytes / size:.1f}x)"
            loaded = sc.load(f"{tmp}/+int8+LZMA", base=lambda: build_model("digits-mlp"))
            row["accuracy after int8 reload"] = f"{acc(loaded, data):.2f}"
            rows.append(row)
            print(rows[-1], flush=True)
    return f"Dense fp32 safetensors: {dense_bytes:,} bytes.\n\n" + table(rows)


def latency() -> str:
    """Ask for 0.5x the dense onnxruntime latency; compare with uniform ratios at the same MACs."""
    teacher, data = dense("digits-cnn")
    example = data.example
    budget = sc.Latency(ms=1e9, batch_size=256)  # carries the batch size for measuring
    measured_ms = lambda m: sc.Planner(m, sc.Structured(sparsity=0.0), example).latency_ms(sc.Plan(), budget)  # noqa: E731
    dense_ms = min(measured_ms(teacher) for _ in range(3))
    target = sc.Latency(ms=0.5 * dense_ms, batch_size=256)
    evaluate = lambda m: sc.accuracy(m, data.val.x, data.val.y)  # noqa: E731
    sens = sc.sensitivity(teacher, sc.Structured(sparsity=0.0, round_to=8), evaluate, example_inputs=example,
                          ratios=(0.25, 0.5, 0.625, 0.75, 0.875), progress=False)
    ratios = sc.allocate(teacher, sens, target, example, sc.Structured(sparsity=0.0, round_to=8))
    allocated = copy.deepcopy(teacher)
    res = sc.prune(allocated, sc.Structured(ratios=ratios, round_to=8), example_inputs=example)
    uniform = copy.deepcopy(teacher)
    sc.prune(uniform, sc.Structured(target=res.macs_after / res.macs_before, round_to=8), example_inputs=example)
    rows = []
    for label, model in (("allocated to the budget", allocated), ("uniform ratios, same MACs", uniform)):
        ms = min(measured_ms(model) for _ in range(3))
        before_ft = acc(model, data)
        _tune(model, data, teacher=teacher)
        rows.append({"model": label, "MACs kept": f"{count_macs(model, (example,)) / res.macs_before:.3f}",
                     "ORT ms (batch 256)": f"{ms:.2f}", "budget": f"{target.ms:.2f}",
                     "met": "yes" if ms <= target.ms else "no", "accuracy before FT": f"{before_ft:.2f}",
                     "accuracy after FT+KD": f"{acc(model, data):.2f}"})
        print(rows[-1], flush=True)
    return (f"Dense: {dense_ms:.2f} ms, {acc(teacher, data):.2f}%. Allocated ratios: {ratios}.\n\n" + table(rows))


SECTIONS = {"curves": curves, "criteria": criteria, "compression": compression, "latency": latency}

if __name__ == "__main__":
    warnings.simplefilter("ignore")
    set_threads(2)
    for name in sys.argv[1:] or list(SECTIONS):
        print(f"\n## {name}\n\n{SECTIONS[name]()}\n", flush=True)
